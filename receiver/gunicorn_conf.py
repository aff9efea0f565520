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
    """gunicorn's threaded worker, answering the requests gunicorn refuses in JSON.

    gunicorn decides the status, logs and writes the access log as usual; only
    the page it writes is replaced."""

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
