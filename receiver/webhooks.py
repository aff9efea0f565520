"""Provider callbacks: verify the raw body, normalise, enqueue, acknowledge.

No database work happens here. The answer is 200 only once Redis has accepted
the event on the callback stream (``workers.stream``: one ``XADD``); when Redis is down
the answer is 503 so that the provider retries.
A callback that fails verification is never queued for apply; if it names an
order, a rate-limited healing poll of that order is queued instead (so a key
misconfiguration heals through the provider's API instead of losing updates).

Before the body is read: the provider must be enabled (404), the client address
allowed (403, ``<PREFIX>ALLOWED_IPS``) and not over its budget of refused requests
(429, ``receiver.limits``). Every refusal after that counts against the budget.

Every answer is counted (``rampwatch_callbacks_total{provider, outcome}``): ``accepted``,
or the error code of the refusal (``invalid_signature``, ``invalid_payload``,
``address_not_allowed``, ``too_many_requests``, ``queue_unavailable``, ...); a slug that
names no provider of the registry is counted as ``other``, so a client cannot mint
labels. A signature that does not verify is also counted by itself
(``rampwatch_verification_failures_total``). Log lines carry the request id, the
provider and, once verified, the order.

Plain WSGI in front of Flask, not a Flask view: this is the one path a provider's
rate goes through, and Flask's request context, hooks and response object cost a
callback more than verifying its signature (``CallbackEndpoint`` answers
``POST /webhooks/<provider>``, in 0.18 ms of a process's time against 0.35 ms as a Flask
view; ``bench/bench_ingest.py``). It answers as the rest of the app does: the same
JSON errors (``receiver.errors.describe``), request ids (``X-Request-ID``), log context
and, for a bug, a logged traceback, Sentry and a 500 in JSON. Every other path goes on
to Flask.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from redis.exceptions import RedisError
from werkzeug.exceptions import InternalServerError, MethodNotAllowed
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request

from config.errors import report
from config.logs import bind, current_context, enter_context, exit_context
from orders.errors import ProviderDisabled, SignatureInvalid
from orders.events import utcnow
from orders.providers import PROVIDERS
from receiver import errors
from receiver.body import MAX_BODY, read_body
from receiver.errors import UnsupportedMediaType
from receiver.ids import REQUEST_ID_HEADER, request_id
from receiver.limits import UnverifiedLimiter, require_allowed

log = logging.getLogger("rampwatch.receiver")

PREFIX = "/webhooks/"
# Refusals that do not count against a client's budget: the provider is off, the
# address is not allowed (refused before any work), or the client is already throttled.
UNCOUNTED = frozenset({403, 404, 429})
ACCEPTED: dict[str, Any] = {"status": "accepted"}


def encode(body: dict[str, Any]) -> bytes:
    """A JSON answer's bytes, as Flask's ``jsonify`` writes them."""
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


ACCEPTED_BODY = encode(ACCEPTED)  # most answers: encoded once

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class CallbackRequest(Request):
    max_content_length = MAX_BODY


class CallbackEndpoint:
    """``POST /webhooks/<provider>`` for the process's ``Services``; ``fallback`` (Flask)
    answers every other path. Any other method on a callback path is a 405, uncounted."""

    def __init__(self, services: Any, limiter: UnverifiedLimiter, fallback: WSGIApp):
        self.services = services
        self.limiter = limiter
        self.fallback = fallback

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        slug = path[len(PREFIX) :] if path.startswith(PREFIX) else ""
        if not slug or "/" in slug:
            return self.fallback(environ, start_response)
        # PATH_INFO carries the path's bytes as latin-1 (PEP 3333); the slug is UTF-8.
        provider = slug.encode("latin-1").decode("utf-8", "replace")
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        token = enter_context(request_id=rid)
        try:
            status, body, headers = self._answer(environ, provider)
        finally:
            exit_context(token)
        data = ACCEPTED_BODY if body is ACCEPTED else encode(body)
        start_response(
            f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown')}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
                *headers.items(),
                (REQUEST_ID_HEADER, rid),
            ],
        )
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [data]  # HEAD: the headers only

    def _answer(self, environ: dict[str, Any], provider: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        request = CallbackRequest(environ)
        if request.method != "POST":
            return self._refusal(MethodNotAllowed(valid_methods=["POST"]), provider)
        try:
            self._accept(request, provider)
        except Exception as exc:  # every failure becomes an answer below
            status, body, headers = self._refusal(exc, provider)
            self._count(provider, body["code"])
            if 400 <= status < 500 and status not in UNCOUNTED:
                try:
                    self.limiter.count(provider, request.remote_addr)
                except RedisError:
                    log.warning("could not count a refused %s callback: redis unavailable", provider)
            return status, body, headers
        self._count(provider, "accepted")
        return 200, ACCEPTED, {}

    def _accept(self, request: Request, provider: str) -> None:
        """Verify and queue the callback; raises what refuses it."""
        services = self.services
        adapter = services.adapters.get(provider)
        if adapter is None:
            raise ProviderDisabled(f"provider {provider} is not configured")
        bind(provider=provider)
        address = request.remote_addr
        require_allowed(provider, address, getattr(services.settings.provider(provider), "allowed_ips", ()))
        self.limiter.check(provider, address)
        if request.mimetype != "application/json":
            raise UnsupportedMediaType(
                f"content type must be application/json, got {request.mimetype or 'none'}"
            )
        body = read_body(request)
        try:
            # The request's own headers (case-insensitive, read from the environ as asked).
            event = adapter.parse_callback(body, request.headers, utcnow())  # type: ignore[arg-type]
        except SignatureInvalid:
            services.metrics.inc("rampwatch_verification_failures", provider=provider)
            self._heal(provider, adapter.order_hint(body))
            log.warning("%s callback refused: signature does not verify", provider)
            raise
        bind(order_id=event.external_order_id or event.provider_order_id)
        entry = services.stream.append(event)
        # DEBUG: at a provider's rate an INFO line per callback costs the receiver ~10% (and a lock
        # its threads contend for); every callback is counted (/metrics) and its apply logged.
        log.debug("%s callback accepted: status=%s entry=%s", provider, event.provider_status, entry)

    def _refusal(self, exc: BaseException, provider: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        answer = errors.describe(exc, max_body=MAX_BODY)
        if answer is None:  # a bug: logged with its traceback, reported, answered 500
            log.exception("%s callback failed: %s", provider, type(exc).__name__)
            report(exc, provider=provider, request_id=current_context().get("request_id", ""))
            answer = errors.describe(InternalServerError(), max_body=MAX_BODY)
            assert answer is not None
        return answer

    def _count(self, provider: str, outcome: str) -> None:
        self.services.metrics.inc(
            "rampwatch_callbacks", provider=provider if provider in PROVIDERS else "other", outcome=outcome
        )

    def _heal(self, provider: str, order_id: str | None) -> None:
        if not order_id:
            return
        try:
            self.services.queues.enqueue_heal(provider, order_id)
        except RedisError:
            log.warning("could not queue a healing poll: redis unavailable")
