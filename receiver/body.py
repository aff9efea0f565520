"""Reading a request body within bounds: at most ``MAX_BODY`` bytes however it is
framed, and never waiting long on a client that stopped sending.

* A ``Content-Length`` over the cap is refused (413) before anything is read.
* A chunked body has no length up front: it is read up to one byte past the cap
  and refused (413) if it has more. (Werkzeug's own limit stops at the cap and
  returns the first 64 KiB as if they were the whole body, so a longer chunked
  body would be cut and then parsed.)
* Under gunicorn each read waits at most ``BODY_IDLE_TIMEOUT`` for the client's
  next bytes (a timeout on the connection's socket, which gunicorn hands the app
  as ``gunicorn.socket``); a client that announced 1,000 bytes and sent 5 gets 408
  instead of holding a worker thread until it hangs up.
"""

from __future__ import annotations

from flask import Request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from receiver.errors import BodyTimeout

MAX_BODY = 64 * 1024
BODY_IDLE_TIMEOUT = 5.0  # seconds a client may pause while sending its body
_CHUNK = 16 * 1024


def read_body(request: Request) -> bytes:
    """The whole body. Raises RequestEntityTooLarge (413) or BodyTimeout (408)."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise RequestEntityTooLarge()
    sock = request.environ.get("gunicorn.socket")
    if sock is not None:
        sock.settimeout(BODY_IDLE_TIMEOUT)
    try:
        if length is None and request.environ.get("wsgi.input_terminated"):
            return _read_terminated(request.environ["wsgi.input"])
        if not length:
            return b""  # no body, or none announced
        # Content-Length framed: read from the server's stream itself (werkzeug's wrapping
        # of it cost a callback 8% of its time); a body that ends short is a client gone.
        body = request.environ["wsgi.input"].read(length)
        if len(body) < length:
            raise ClientDisconnected()
        return body
    except ClientDisconnected as exc:
        if isinstance(exc.__context__, TimeoutError):
            raise BodyTimeout(f"the body did not arrive within {BODY_IDLE_TIMEOUT:g}s of silence") from None
        raise
    except TimeoutError:
        raise BodyTimeout(f"the body did not arrive within {BODY_IDLE_TIMEOUT:g}s of silence") from None


def _read_terminated(stream: object) -> bytes:
    """A stream the server ends itself (chunked): up to the cap, 413 past it."""
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_CHUNK, MAX_BODY + 1 - size))  # type: ignore[attr-defined]
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            raise RequestEntityTooLarge()
