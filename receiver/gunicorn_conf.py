"""gunicorn's settings for the Procfile's ``web`` line (``--config python:receiver.gunicorn_conf``).

Threaded workers, so that slow clients cannot hold every worker: a sync worker
reads a request's body itself, and two clients that announce a body and stop
sending held both of the default two for gunicorn's whole 30 s timeout, /healthz
included. Here each worker process serves ``threads`` requests at once, a
connection that has sent nothing waits in the worker's poller instead of a
thread, and a body that stops arriving is cut after ``receiver.body.BODY_IDLE_TIMEOUT``
(408). The timeouts fit inside one another: a request waits at most
``receiver.WEB_DATABASE_WAIT`` (3 s) per database wait and a provider's timeout
(10 s by default) for order creation, well below ``timeout``.

Requests gunicorn refuses itself (a request line over ``limit_request_line``: 414,
malformed HTTP: 400) are answered in JSON like every other answer
(``JSONErrorWorker``), not with gunicorn's HTML page.

Bind address and process count stay on the Procfile line (``$PORT``,
``$WEB_CONCURRENCY``): only ``config/`` reads the environment.
"""

from __future__ import annotations

import json
import time
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

worker_class = "receiver.gunicorn_conf.JSONErrorWorker"
threads = 8
timeout = 30  # a worker whose main loop stops answering is restarted after this
graceful_timeout = 20  # SIGTERM: requests in hand get this long to finish
keepalive = 5
# An order id is at most 128 characters: no request of ours comes near these.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
ACCEPT_HOLD = 0.01  # seconds a worker holding ``threads`` connections leaves a new one to its siblings

READY = "worker %s ready"  # logged once a worker process has loaded the app and is about to accept


def post_worker_init(worker: Any) -> None:
    worker.log.info(READY, worker.pid)


MESSAGES = {
    400: "malformed HTTP request",
    414: f"request line longer than {limit_request_line} bytes (an order id is at most 128 characters)",
    431: "request headers too large",
}


class _Captured:
    """Stands in for the client socket while gunicorn writes its error page."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0

    def setblocking(self, flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.data += data


def json_error(status: int, reason: str) -> bytes:
    """A complete HTTP/1.1 error answer with the app's JSON error body."""
    code = reason.lower().replace(" ", "_").replace("-", "_")
    body = json.dumps({"error": MESSAGES.get(status, reason.lower()), "code": code}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class JSONErrorWorker(ThreadWorker):
    """gunicorn's threaded worker, answering the requests gunicorn refuses in JSON, and
    sharing connections fairly with its sibling processes.

    gunicorn decides the status, logs and writes the access log as usual; only
    the page it writes is replaced.

    Fair accept: every worker process waits on the same listening socket, and the one
    the kernel wakes first takes every connection that is waiting. Clients that keep
    their connections open (a provider, a proxy, a load generator) then stay on one
    process while the others idle: 16 keep-alive connections all landed on one of two
    workers in 3 runs of 4, which served a third of what the two serve together. So a
    worker that already holds ``threads`` connections steps aside for ``ACCEPT_HOLD``
    before taking another, giving a less loaded sibling the first pick; when every
    sibling is as loaded, it takes one connection per hold. A worker with room accepts
    at once, as gunicorn does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_at: float | None = None  # accepting is off until then
        self._after_hold = False  # the hold is over: the next connection is taken

    def accept(self, listener: Any) -> None:
        if self.nr_conns >= self.cfg.threads and not self._after_hold:
            self._resume_at = time.monotonic() + ACCEPT_HOLD
            super().set_accept_enabled(False)
            return
        self._after_hold = False
        super().accept(listener)

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled and self._resume_at is not None:
            if time.monotonic() < self._resume_at:
                return
            self._resume_at = None
            self._after_hold = True
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._resume_at is not None:  # wake up when the hold ends
            timeout = min(timeout, max(0.0, self._resume_at - time.monotonic()))
        super().wait_for_and_dispatch_events(timeout)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        captured = _Captured()
        super().handle_error(req, captured, addr, exc)
        status, reason = 400, "Bad Request"
        first = captured.data.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        if len(first) == 3 and first[1].isdigit():
            status, reason = int(first[1]), first[2]
        try:
            util.write_nonblock(client, json_error(status, reason))
        except OSError:
            self.log.debug("Failed to send error message.")
