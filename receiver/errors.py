"""One table from exceptions to HTTP statuses and JSON error bodies.

Every answer the app gives is JSON, errors included. Dependencies that are down
or too slow are 503 with ``Retry-After`` (Redis, the database, a provider), so
callers retry; none of them is a 500 or leaves a traceback in the logs. A
database error is logged as one line naming its class, never its statement or
parameters.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from orders.errors import (
    AnomalyNotFound,
    Conflict,
    InvalidPayload,
    OrderNotFound,
    ProviderDisabled,
    ProviderRejected,
    ProviderResponseInvalid,
    ProviderUnavailable,
    SignatureInvalid,
)

log = logging.getLogger("rampwatch.receiver")

RETRY_AFTER = 5  # seconds, on every 503


class UnsupportedMediaType(Exception):
    pass


class Unauthorized(Exception):
    pass


class Forbidden(Exception):
    pass


class InvalidParameter(InvalidPayload):
    """A query parameter or header of an ``/api`` request is not valid; ``fields`` names it."""


class PollFailed(Exception):
    """An operator's reconcile waited for its poll, and the poll failed for good."""


class AddressNotAllowed(Exception):
    """The client address is not in the provider's ``<PREFIX>ALLOWED_IPS``."""


class BodyTimeout(Exception):
    """The client stopped sending its body for longer than the receiver waits."""


class RateLimited(Exception):
    """Too many refused requests from one address to one provider in the window."""

    def __init__(self, message: str, retry_after: int):
        self.retry_after = retry_after
        super().__init__(message)


# Waiting on the database ran out, or it cannot be reached: transient, like Redis.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, PoolTimeout)

# exception class -> (status, error code); the message is the exception's text
# unless ``MESSAGES`` has a fixed one (a dependency's own text is not for callers).
ERROR_TABLE: list[tuple[type[BaseException], int, str]] = [
    (InvalidParameter, 400, "invalid_parameter"),
    (InvalidPayload, 400, "invalid_payload"),
    (SignatureInvalid, 401, "invalid_signature"),
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (AddressNotAllowed, 403, "address_not_allowed"),
    (ProviderDisabled, 404, "provider_disabled"),
    (OrderNotFound, 404, "order_not_found"),
    (AnomalyNotFound, 404, "anomaly_not_found"),
    (BodyTimeout, 408, "request_timeout"),
    (UnsupportedMediaType, 415, "unsupported_media_type"),
    (Conflict, 409, "conflict"),  # the exception's own code: idempotency_conflict, ...
    (RateLimited, 429, "too_many_requests"),
    (ProviderRejected, 502, "provider_rejected"),
    (ProviderResponseInvalid, 502, "provider_response_invalid"),
    (PollFailed, 502, "poll_failed"),
    (ProviderUnavailable, 503, "provider_unavailable"),
    (RedisError, 503, "queue_unavailable"),
    *[(exc, 503, "database_unavailable") for exc in DATABASE_ERRORS],
]

MESSAGES = {
    "queue_unavailable": "the queue (Redis) is unavailable; retry",
    "database_unavailable": "the database is unavailable or busy; retry",
}


def describe(exc: BaseException, *, max_body: int) -> tuple[int, dict[str, Any], dict[str, str]] | None:
    """The answer to ``exc``: its status, JSON body and headers; None when nothing in the
    table (nor werkzeug's HTTP exceptions) names it, i.e. a bug (500). The most specific
    class wins, as in Flask's own handler lookup. ``max_body`` is named in a 413's message."""
    if isinstance(exc, HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"body larger than {max_body} bytes"
        return _answer(exc.code or 500, code, message)
    listed = _listed(exc)
    if listed is None:
        return None
    status, code = listed
    extra: dict[str, Any] = {}
    if isinstance(exc, InvalidPayload) and exc.fields:
        extra["fields"] = exc.fields
    retry_after = exc.retry_after if isinstance(exc, (RateLimited, Conflict)) else None
    if isinstance(exc, Conflict):
        code = exc.code
    message = MESSAGES.get(code) or str(exc)
    return _answer(status, code, message, retry_after=retry_after, **extra)


def status_of(exc: BaseException) -> int:
    """The table's HTTP status for ``exc`` (500 for what it does not name): the console's
    HTML error pages answer with the API's statuses."""
    listed = _listed(exc)
    return listed[0] if listed else 500


def _listed(exc: BaseException) -> tuple[int, str] | None:
    """The table's (status, code) for ``exc``: its most specific class wins, as in Flask's
    own handler lookup."""
    for cls in type(exc).__mro__:
        if cls in _BY_CLASS:
            return _BY_CLASS[cls]
    return None


def _answer(
    status: int, code: str, message: str, *, retry_after: int | None = None, **extra: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = {"error": message, "code": code, **extra}
    headers: dict[str, str] = {}
    if status == 401 and code == "unauthorized":
        headers["WWW-Authenticate"] = 'Bearer realm="rampwatch"'
    if retry_after is None and status == 503:
        retry_after = RETRY_AFTER
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return status, body, headers


_BY_CLASS: dict[type[BaseException], tuple[int, str]] = {
    cls: (status, code) for cls, status, code in ERROR_TABLE
}


def _response(status: int, body: dict[str, Any], headers: dict[str, str]) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    resp.headers.update(headers)
    return resp


def register(app: Flask) -> None:
    def handler(exc: BaseException) -> Response:
        answer = describe(exc, max_body=app.config["MAX_CONTENT_LENGTH"])
        if answer is None:  # registered for the table's classes only: cannot happen
            raise exc
        if answer[1]["code"] == "database_unavailable":
            # The class only: SQLAlchemy's text carries the statement.
            cause = getattr(exc, "orig", None) or exc
            log.warning("database unavailable: %s", type(cause).__name__)
        return _response(*answer)

    for exc_class in _BY_CLASS:
        app.register_error_handler(exc_class, handler)
    app.register_error_handler(HTTPException, handler)
