"""The callback courier: one background thread that POSTs a sandbox's callbacks.

Providers send each callback once or a few times and never in a guaranteed
order, so the courier makes that reproducible: a callback is queued with a due
time (``delay``) and a number of copies (``1 + duplicate``), or held until
``flush()`` releases the held ones newest first (``reorder``), or recorded as
dropped. One thread POSTs due callbacks in due-time order, one attempt each,
with a timeout, to loopback URLs only, and records ``(order id, label, HTTP
status or error name)`` in ``deliveries``. It shares its owner's condition
variable, so a sandbox can queue under the lock it holds for its orders.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from devkit.kit.loopback import is_loopback_url

Delivery = tuple[str, str, int | str]


@dataclass(frozen=True)
class Callback:
    """One callback as the provider would send it: body and headers signed already."""

    order_id: str
    label: str  # what it announces (a status, an event name): for logs and deliveries
    body: bytes
    headers: Mapping[str, str]
    url: str | None  # None: the sandbox's callback_url at delivery time
    copies: int = 1


class Courier:
    """Queues, holds and posts callbacks. Thread-safe under the shared ``cv``."""

    def __init__(
        self,
        name: str,
        cv: threading.Condition,
        default_url: Callable[[], str | None],
        *,
        timeout: float,
        log: logging.Logger,
    ):
        self.name = name
        self._cv = cv
        self._default_url = default_url
        self._timeout = timeout
        self.log = log
        self._queue: list[tuple[float, int, Callback]] = []
        self._seq = itertools.count()
        self._held: list[Callback] = []
        self._in_flight = 0
        self._deliveries: list[Delivery] = []
        self._dropped: list[tuple[str, str]] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-sandbox-courier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop posting; what is queued is discarded (one callback in flight may finish)."""
        self._stopping.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout + 1.0)
            self._thread = None
        with self._cv:
            self._queue.clear()
            self._cv.notify_all()

    # -- what the sandbox asks

    def send(self, callback: Callback, switches: Mapping[str, Any], *, dropped: bool) -> str:
        """Handle ``callback`` as ``switches`` say: record it as ``dropped``, hold it
        (``reorder``), or schedule it after ``delay``. Returns which it was."""
        what = f"callback for order {callback.order_id} ({callback.label})"
        with self._cv:
            if dropped:
                self._dropped.append((callback.order_id, callback.label))
                self.log.info("%s dropped by switch", what)
                return "dropped"
            if switches["reorder"]:
                self._held.append(callback)
                self.log.info("%s held for reorder", what)
                return "held"
            self.schedule(callback, switches["delay"])
            return "queued"

    def schedule(self, callback: Callback, delay: float) -> None:
        """Queue ``callback.copies`` posts of ``callback``, due in ``delay`` seconds."""
        with self._cv:
            due = time.monotonic() + delay
            for _ in range(callback.copies):
                heapq.heappush(self._queue, (due, next(self._seq), callback))
            self._cv.notify_all()

    def flush(self) -> int:
        """Release the held callbacks for immediate delivery, newest first; how many."""
        with self._cv:
            held, self._held = self._held, []
            for callback in reversed(held):
                self.schedule(callback, 0.0)
            return len(held)

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is queued or in flight (held ones do not count). False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cv.wait(remaining)
            return True

    # -- what happened

    @property
    def deliveries(self) -> list[Delivery]:
        with self._cv:
            return list(self._deliveries)

    @property
    def dropped(self) -> list[tuple[str, str]]:
        with self._cv:
            return list(self._dropped)

    @property
    def held(self) -> int:
        with self._cv:
            return len(self._held)

    @property
    def pending(self) -> int:
        """Queued or in flight."""
        with self._cv:
            return len(self._queue) + self._in_flight

    # -- the thread

    def _loop(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stopping.is_set():
                        return
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        _, _, callback = heapq.heappop(self._queue)
                        self._in_flight += 1
                        break
                    self._cv.wait(self._queue[0][0] - now if self._queue else None)
            outcome: int | str = "not sent"
            try:
                outcome = self._post(callback)
            finally:
                with self._cv:
                    self._in_flight -= 1
                    self._deliveries.append((callback.order_id, callback.label, outcome))
                    self._cv.notify_all()

    def _post(self, callback: Callback) -> int | str:
        url = callback.url or self._default_url()
        if url is None:
            return "no callback_url"
        if not is_loopback_url(url):  # checked on entry too; never call out
            return "not loopback"
        what = f"callback for order {callback.order_id} ({callback.label})"
        try:
            resp = requests.post(
                url,
                data=callback.body,
                headers=dict(callback.headers),
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            self.log.warning("%s failed: %s", what, type(exc).__name__)
            return type(exc).__name__
        except Exception as exc:
            self.log.exception("%s failed", what)
            return type(exc).__name__
        self.log.info("%s answered HTTP %d", what, resp.status_code)
        return resp.status_code
