"""Fault switches: what a sandbox does wrong on purpose, globally or for one order.

The common switches are ``drop`` (swallow every callback), ``drop_rate`` (swallow
each with this probability, reproducible with the global ``seed``),
``duplicate`` (send N extra copies), ``delay`` (seconds before sending) and
``reorder`` (hold callbacks until a flush, which sends the newest first); a
sandbox adds its own (``rate_limit``...), and those of its order-detail API
(``DETAIL_SWITCHES``: ``detail_delay``, ``detail_fail`` for a 503,
``detail_throttle`` for a 429, ``detail_redirect`` for a 307 elsewhere,
``detail_garbage`` for a 200 that is an HTML error page).
The type of a switch's default says what it accepts: a bool is on/off, an int
a count (0..its limit), a float a duration of 0..600 s. A per-order value
overrides the global one; a switch may be declared global only. This module
owns the values, their checks and the seeded dice; the courier and the
sandboxes read them through ``effective(order_id)``.
"""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Collection, Mapping
from typing import Any

from devkit.kit.wire import finite_number

MAX_DELAY = 600.0
MAX_DUPLICATE = 100

COMMON_SWITCHES: Mapping[str, Any] = {
    "drop": False,
    "drop_rate": 0.0,
    "seed": None,
    "duplicate": 0,
    "delay": 0.0,
    "reorder": False,
}

# The order-detail API's faults, declared by every sandbox that serves one (see
# ``SandboxKit._detail_fault`` and ``SandboxKit._detail_misanswer``).
DETAIL_SWITCHES: Mapping[str, Any] = {
    "detail_delay": 0.0,
    "detail_fail": False,
    "detail_throttle": False,
    "detail_redirect": False,
    "detail_garbage": False,
}


class Switches:
    """The switches of one sandbox. Thread-safe under the ``lock`` it shares with its owner."""

    def __init__(
        self,
        extra: Mapping[str, Any],
        lock: threading.RLock,
        *,
        limits: Mapping[str, int] | None = None,
        global_only: Collection[str] = (),
    ):
        self.defaults: dict[str, Any] = {**COMMON_SWITCHES, **extra}
        self._limits = {"duplicate": MAX_DUPLICATE, **(limits or {})}
        self._global_only = frozenset({"seed", *global_only})
        self._lock = lock
        self._global: dict[str, Any] = dict(self.defaults)
        self._orders: dict[str, dict[str, Any]] = {}
        self._random = random.Random(self.defaults["seed"])

    def set(self, order_id: str | None = None, *, reset: bool = False, **values: Any) -> dict[str, Any]:
        """Set switches globally, or for one order (a per-order None removes that override);
        ``reset`` first restores the defaults (global: also drops every order's overrides)
        or removes the order's overrides. Returns ``snapshot()``. ValueError on an unknown
        switch or a bad value, and then nothing changes."""
        if order_id is not None and not isinstance(order_id, str):
            raise ValueError("order_id must be a string")
        if not isinstance(reset, bool):
            raise ValueError("reset: expected true or false")
        unknown = sorted(set(values) - set(self.defaults))
        if unknown:
            raise ValueError(f"unknown switches: {', '.join(unknown)}; known: {', '.join(self.defaults)}")
        global_only = sorted(self._global_only & set(values))
        if order_id is not None and global_only:
            raise ValueError(f"{', '.join(global_only)}: global switches only")
        checked = {
            name: None if order_id is not None and value is None else self.check(name, value)
            for name, value in values.items()
        }
        with self._lock:
            if order_id is None:
                if reset:
                    self._global = dict(self.defaults)
                    self._orders.clear()
                    self._random = random.Random(self.defaults["seed"])
                self._global.update(checked)
                if "seed" in checked:
                    self._random = random.Random(checked["seed"])
            else:
                overrides = {} if reset else dict(self._orders.get(order_id, {}))
                for name, value in checked.items():
                    if value is None:
                        overrides.pop(name, None)
                    else:
                        overrides[name] = value
                if overrides:
                    self._orders[order_id] = overrides
                else:
                    self._orders.pop(order_id, None)
            return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """``{"global": {...}, "orders": {order_id: {overrides}}}``."""
        with self._lock:
            return {"global": dict(self._global), "orders": copy.deepcopy(self._orders)}

    def effective(self, order_id: str | None) -> dict[str, Any]:
        """The switches in force for ``order_id`` (the global ones when None)."""
        with self._lock:
            out = dict(self._global)
            if order_id is not None:
                out.update(self._orders.get(order_id, {}))
            return out

    def drops(self, switches: Mapping[str, Any]) -> bool:
        """Whether a callback under ``switches`` is swallowed (``drop``, or the seeded dice
        of ``drop_rate``; the dice are thrown only when the rate is above 0, so a seed
        gives the same run every time)."""
        rate = switches["drop_rate"]
        with self._lock:
            return bool(switches["drop"]) or (rate > 0 and self._random.random() < rate)

    def consume(self, name: str) -> bool:
        """Take one from the global count ``name`` (e.g. ``rate_limit``): True when it was
        above 0, and then it is one less."""
        with self._lock:
            left = self._global[name]
            if left <= 0:
                return False
            self._global[name] = left - 1
            return True

    def check(self, name: str, value: Any) -> Any:
        """``value`` as switch ``name`` holds it (a duration as a float); ValueError when bad."""
        default = self.defaults[name]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name}: expected true or false")
            return value
        if name == "seed":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError("seed: expected an integer or null")
            return value
        if name in self._limits:
            limit = self._limits[name]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
                raise ValueError(f"{name}: expected an integer 0..{limit}")
            return value
        if not finite_number(value):
            raise ValueError(f"{name}: expected a number")
        value = float(value)
        if name == "drop_rate":
            if not 0.0 <= value <= 1.0:
                raise ValueError("drop_rate: expected 0..1")
        elif not 0.0 <= value <= MAX_DELAY:
            raise ValueError(f"{name}: expected 0..{MAX_DELAY:g} seconds")
        return value
