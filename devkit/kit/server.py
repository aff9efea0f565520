"""The HTTP side of a sandbox: Werkzeug's threaded server on a loopback port.

A sandbox's handlers take a ``Request`` (Werkzeug's, plus the raw request-target
a signature may cover, the raw body and the query as lists) and return a
``Reply``: ``(status, payload)`` or ``(status, payload, headers)``, the payload
sent as compact JSON, or as is when it is bytes. This module owns turning one
into the other (``wsgi_app``), the server (``serve``: listens before Werkzeug
is asked to, so a busy port is an ``OSError`` and not Werkzeug's
``sys.exit``), and routing a request through a Werkzeug ``Map`` (``route``).
Bodies are capped at ``MAX_BODY`` (413); a silent client is dropped after 10 s;
nothing about the client (address, user agent) is logged.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import Map
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request as WerkzeugRequest
from werkzeug.wrappers import Response

from devkit.kit.wire import compact

MAX_BODY = 1 << 20

# (status, payload) or (status, payload, extra response headers)
Reply = tuple[int, Any] | tuple[int, Any, Mapping[str, str]]


class Request(WerkzeugRequest):
    """One HTTP request as a sandbox sees it. Its body is read before the handler runs,
    so ``raw`` stays readable after the answer (tests keep requests to inspect them)."""

    max_content_length = MAX_BODY

    @property
    def raw(self) -> bytes:
        """The body exactly as sent."""
        return self.get_data(cache=True)

    @property
    def target(self) -> str:
        """The request-target exactly as sent, path and query (what Changelly signs)."""
        return str(self.environ.get("RAW_URI") or self.full_path)

    @property
    def query(self) -> dict[str, list[str]]:
        """Every query parameter with all its values, blank ones kept."""
        return {name: self.args.getlist(name) for name in self.args}

    def arg(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        return self.args.get(name)


def route(urls: Map, request: Request) -> tuple[Any, dict[str, Any]]:
    """The endpoint and path values ``request`` matches in ``urls``. Raises Werkzeug's
    ``NotFound`` or ``MethodNotAllowed`` (both ``HTTPException``, with ``code``)."""
    return urls.bind_to_environ(request.environ).match()


def rules_map(rules: Iterable[Any], *, strict_slashes: bool = True) -> Map:
    """A Map that matches paths as sent: no redirect for doubled or missing slashes."""
    return Map(list(rules), strict_slashes=strict_slashes, merge_slashes=False, redirect_defaults=False)


def response(reply: Reply) -> Response:
    status, payload, *headers = reply
    data = payload if isinstance(payload, bytes) else compact(payload)
    answer = Response(data, status=status, content_type="application/json")
    for name, value in (headers[0] if headers else {}).items():
        answer.headers[name] = value
    return answer


def wsgi_app(dispatch: Callable[[Request], Reply]) -> Callable[..., Iterable[bytes]]:
    """The WSGI application of a sandbox whose requests ``dispatch`` answers."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            request.get_data(cache=True)
        except RequestEntityTooLarge:
            reply: Reply = (413, {"error": "Invalid request"})
        else:
            reply = dispatch(request)
        return response(reply)(environ, start_response)

    return app


def serve(
    app: Callable[..., Iterable[bytes]], host: str, port: int, *, name: str, log: logging.Logger
) -> BaseWSGIServer:
    """A threaded server of ``app`` on ``host:port`` (0: a free port), not yet serving.
    OSError when it cannot listen."""

    class Handler(WSGIRequestHandler):
        timeout = 10  # a silent client cannot hold a thread forever
        protocol_version = "HTTP/1.1"  # Werkzeug still closes each connection after its answer

        def version_string(self) -> str:
            return f"RampwatchSandbox-{name}/1"

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            log.debug("%s %s -> %s", self.command, urlsplit(self.path).path, code)

        def log(self, type: str, message: str, *args: Any) -> None:
            # Werkzeug's own lines start with the client's address: not logged.
            log.log(logging.WARNING if type == "error" else logging.DEBUG, message, *args)

    # Listen first: Werkzeug prints and calls sys.exit() when it cannot bind.
    listener = socket.create_server((host, port))
    try:
        return make_server(host, port, app, threaded=True, request_handler=Handler, fd=listener.fileno())
    finally:
        listener.close()
