"""``SandboxKit``: the base class of every provider sandbox.

A provider's sandbox (``devkit/<slug>/sandbox.py``) subclasses it and adds only
what is its own: orders, signing, endpoints. The kit composes the rest (the
server, the switches, the courier, the control API) and owns a sandbox's life:
start, stop, its orders' bookkeeping and the autopilot.

Subclass API. Class attributes: ``name`` (the slug: log names, threads, the
CLI); ``extra_switches`` (``{name: default}`` beyond the common ones, see
``devkit.kit.switches``), ``switch_limits`` (the upper bound of each count
switch) and ``global_switches`` (switches no order may override);
``callback_timeout`` (seconds per callback POST); ``status_field`` (the key of
an order dict ``truth()`` reports); ``known_steps`` and ``step_noun`` (what
``autopilot`` accepts, and what they are called in its error);
``control_rules`` (Werkzeug ``Rule``s under ``/sandbox``, each endpoint naming a
method called with the posted JSON object and the path's values). Methods:
``_handle(request) -> Reply`` answers every request outside ``/sandbox/``;
``advance(order_id, step)`` is what ``autopilot`` calls; ``_check_steps`` may
refuse an autopilot plan. A subclass holds ``self._lock`` (an RLock shared with
the courier) around ``self._orders`` (id -> order dict), reads the switches in
force with ``self._effective(order_id)``, applies ``detail_delay`` and
``detail_fail`` with ``self._detail_fault(order_id)`` and the other
``DETAIL_SWITCHES`` with ``self._detail_misanswer(order_id)``, and sends a signed
callback with ``self._send_callback(order_id, label, body, headers, url)``.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

from werkzeug.routing import Rule
from werkzeug.serving import BaseWSGIServer

from devkit.kit import control
from devkit.kit.courier import Callback, Courier, Delivery
from devkit.kit.loopback import check_loopback_url, is_loopback_ipv4
from devkit.kit.server import Reply, Request, serve, wsgi_app
from devkit.kit.switches import MAX_DELAY, Switches
from devkit.kit.wire import finite_number


class SandboxKit:
    """The shared base of provider sandboxes. Thread-safe; see the module docstring."""

    name: ClassVar[str] = "sandbox"
    extra_switches: ClassVar[Mapping[str, Any]] = {}
    switch_limits: ClassVar[Mapping[str, int]] = {}
    global_switches: ClassVar[Collection[str]] = ()
    callback_timeout: ClassVar[float] = 5.0
    status_field: ClassVar[str] = "status"
    known_steps: ClassVar[Collection[str]] = ()
    step_noun: ClassVar[str] = "steps"
    control_rules: ClassVar[Sequence[Rule]] = ()

    def __init__(self, *, callback_url: str | None = None, host: str = "127.0.0.1", port: int = 0):
        if not is_loopback_ipv4(host):
            raise ValueError("the sandbox binds only a loopback IPv4 address such as 127.0.0.1")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError("port must be 0..65535 (0 picks a free port)")
        self.host = host
        self.port = port
        self.log = logging.getLogger(f"rampwatch.sandbox.{self.name}")
        self._callback_url: str | None = None
        self.callback_url = callback_url

        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._orders: dict[str, dict[str, Any]] = {}
        self._faults = Switches(
            self.extra_switches, self._lock, limits=self.switch_limits, global_only=self.global_switches
        )
        self._courier = Courier(
            self.name, self._cv, lambda: self._callback_url, timeout=self.callback_timeout, log=self.log
        )
        self._controls = control.control_map(self.control_rules)
        self._stopping = threading.Event()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- what subclasses provide

    def _handle(self, request: Request) -> Reply:
        return 404, {"error": "Not found"}

    def _check_steps(self, steps: list[Any]) -> None:
        """Raise ValueError when ``advance`` would refuse one of ``steps``: by default, one
        not in ``known_steps`` (when there are any)."""
        unknown = [s for s in steps if s not in self.known_steps] if self.known_steps else []
        if unknown:
            raise ValueError(f"unknown {self.step_noun}: {', '.join(map(str, unknown))}")

    def advance(self, order_id: str, step: Any) -> Any:
        raise NotImplementedError

    # -- lifecycle

    def start(self) -> Self:
        """Listen and serve (OSError when the port cannot be had); start the courier."""
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        self._stopping.clear()
        server = serve(wsgi_app(self._dispatch), self.host, self.port, name=self.name, log=self.log)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}-sandbox-http",
            daemon=True,
        )
        self._thread.start()
        self._courier.start()
        self.log.info("%s sandbox listening on %s", self.name, self.url)
        return self

    def stop(self) -> None:
        """Stop serving; callbacks not yet delivered are discarded (one in flight may finish)."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._courier.stop()
        self._server = None
        self._thread = None
        self.log.info("%s sandbox stopped", self.name)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321`` (running sandboxes only)."""
        if self._server is None:
            raise RuntimeError("the sandbox is not running")
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def callback_url(self) -> str | None:
        return self._callback_url

    @callback_url.setter
    def callback_url(self, value: str | None) -> None:
        self._callback_url = None if value is None else check_loopback_url(value, "callback_url")

    # -- orders

    def order(self, order_id: str) -> dict[str, Any]:
        """The order as the sandbox holds it (unsigned). Raises KeyError when unknown."""
        with self._lock:
            return copy.deepcopy(self._orders[order_id])

    def truth(self) -> dict[str, str]:
        """Every order's present status (its ``status_field``), id -> status."""
        with self._lock:
            return {oid: order[self.status_field] for oid, order in self._orders.items()}

    def autopilot(self, order_id: str, steps: Iterable[Any], interval: float = 1.0) -> threading.Thread:
        """``advance`` the order through ``steps``, one every ``interval`` seconds, on a
        daemon thread (returned, already started). Stops early when the sandbox stops."""
        plan = list(steps)
        self._check_steps(plan)
        if not finite_number(interval) or not 0 <= interval <= MAX_DELAY:
            raise ValueError(f"interval must be 0..{MAX_DELAY:g} seconds")
        with self._lock:
            if order_id not in self._orders:
                raise KeyError(order_id)

        def run() -> None:
            for step in plan:
                if self._stopping.wait(interval):
                    return
                try:
                    self.advance(order_id, step)
                except Exception:
                    self.log.exception("autopilot for order %s stopped", order_id)
                    return

        thread = threading.Thread(target=run, name=f"{self.name}-sandbox-autopilot-{order_id}", daemon=True)
        thread.start()
        return thread

    # -- switches

    def set_switches(
        self, order_id: str | None = None, *, reset: bool = False, **switches: Any
    ) -> dict[str, Any]:
        """Set fault switches globally, or for one order when ``order_id`` is given (a
        per-order value of None removes that override). ``reset=True`` first restores the
        defaults (global) or removes the order's overrides. Returns ``switches``.
        Raises ValueError on an unknown switch or a bad value; nothing changes then."""
        snapshot = self._faults.set(order_id, reset=reset, **switches)
        self.log.info("switches set (order %s): %s", order_id or "*", sorted(switches))
        return snapshot

    @property
    def switches(self) -> dict[str, Any]:
        """``{"global": {...}, "orders": {order_id: {overrides}}}``."""
        return self._faults.snapshot()

    def _effective(self, order_id: str | None) -> dict[str, Any]:
        return self._faults.effective(order_id)

    def _detail_fault(self, order_id: str | None) -> bool:
        """A read of ``order_id`` under the ``detail_delay`` and ``detail_fail`` switches (of
        a sandbox that declares them): waits ``detail_delay`` (less when the sandbox stops),
        then True when ``detail_fail`` is on and the read must fail."""
        switches = self._effective(order_id)
        if switches["detail_delay"] > 0:
            self._stopping.wait(switches["detail_delay"])
        return switches["detail_fail"]

    def _detail_misanswer(self, order_id: str | None) -> Reply | None:
        """What a read of ``order_id`` answers instead of the order under the switches
        that mimic a proxy or a CDN in front of the provider: ``detail_throttle`` (429,
        ``Retry-After: 1``), ``detail_redirect`` (307 to another host) and
        ``detail_garbage`` (200 with an HTML error page); None when none is on."""
        switches = self._effective(order_id)
        if switches["detail_throttle"]:
            reply: Reply = (429, b"Too many requests", {"Retry-After": "1", "Content-Type": "text/plain"})
        elif switches["detail_redirect"]:
            reply = (307, b"", {"Location": "http://127.0.0.1:9/moved"})
        elif switches["detail_garbage"]:
            reply = (
                200,
                b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                {"Content-Type": "text/html"},
            )
        else:
            return None
        self.log.info("detail read of order %s: answering %d by switch", order_id, reply[0])
        return reply

    # -- callbacks

    @property
    def deliveries(self) -> list[Delivery]:
        """(order id, label, HTTP status or error name) of every callback actually POSTed."""
        return self._courier.deliveries

    @property
    def dropped(self) -> list[tuple[str, str]]:
        """(order id, label) of every callback a ``drop``/``drop_rate`` switch swallowed."""
        return self._courier.dropped

    @property
    def held(self) -> int:
        """How many callbacks ``reorder`` holds until ``flush()``."""
        return self._courier.held

    @property
    def pending(self) -> int:
        """How many callbacks are queued or in flight."""
        return self._courier.pending

    def flush(self) -> int:
        """Release the callbacks held by ``reorder`` for immediate delivery, newest first.
        Returns how many were released; ``wait_idle()`` waits for their delivery."""
        released = self._courier.flush()
        if released:
            self.log.info("flushed %d held callbacks", released)
        return released

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no callback is queued or in flight (held ones do not count). False on timeout."""
        return self._courier.wait_idle(timeout)

    def _send_callback(
        self,
        order_id: str,
        label: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        url: str | None = None,
    ) -> str:
        """Queue one callback subject to the order's switches. Returns what happened:
        ``queued``, ``held``, ``dropped`` or ``no callback_url``."""
        with self._lock:
            if url is None and self._callback_url is None:
                self.log.debug("no callback_url: callback for order %s (%s) not sent", order_id, label)
                return "no callback_url"
            switches = self._effective(order_id)
            headers = {"Content-Type": "application/json", **(headers or {})}
            callback = Callback(order_id, label, body, headers, url, copies=1 + switches["duplicate"])
            return self._courier.send(callback, switches, dropped=self._faults.drops(switches))

    # -- HTTP

    def _dispatch(self, request: Request) -> Reply:
        try:
            if control.is_control(request):
                return control.answer(self, self._controls, request)
            return self._handle(request)
        except Exception:
            self.log.exception("sandbox failed on %s %s", request.method, request.path)
            return 500, {"error": "Internal error"}
