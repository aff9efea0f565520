"""One table from exceptions to HTTP statuses and JSON error bodies."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from orders.errors import (
    InvalidPayload,
    OrderNotFound,
    ProviderDisabled,
    ProviderRejected,
    ProviderResponseInvalid,
    ProviderUnavailable,
    SignatureInvalid,
)


class UnsupportedMediaType(Exception):
    pass


class Unauthorized(Exception):
    pass


class Forbidden(Exception):
    pass


# exception class -> (status, error code); the message is the exception's text.
ERROR_TABLE: list[tuple[type[BaseException], int, str]] = [
    (InvalidPayload, 400, "invalid_payload"),
    (SignatureInvalid, 401, "invalid_signature"),
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (ProviderDisabled, 404, "provider_disabled"),
    (OrderNotFound, 404, "order_not_found"),
    (UnsupportedMediaType, 415, "unsupported_media_type"),
    (ProviderRejected, 502, "provider_rejected"),
    (ProviderResponseInvalid, 502, "provider_response_invalid"),
    (ProviderUnavailable, 503, "provider_unavailable"),
    (RedisError, 503, "queue_unavailable"),
]


def error_response(status: int, code: str, message: str, **extra: Any) -> Any:
    body = {"error": message, "code": code, **extra}
    resp = jsonify(body)
    resp.status_code = status
    if status == 401 and code == "unauthorized":
        resp.headers["WWW-Authenticate"] = 'Bearer realm="rampwatch"'
    if status == 503:
        resp.headers["Retry-After"] = "5"
    return resp


def register(app: Flask) -> None:
    for exc_class, status, code in ERROR_TABLE:

        def handler(exc: BaseException, status: int = status, code: str = code) -> Any:
            extra: dict[str, Any] = {}
            if isinstance(exc, InvalidPayload) and exc.fields:
                extra["fields"] = exc.fields
            message = (
                str(exc) if not isinstance(exc, RedisError) else "the queue (Redis) is unavailable; retry"
            )
            return error_response(status, code, message, **extra)

        app.register_error_handler(exc_class, handler)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"body larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
        return error_response(exc.code or 500, code, message)
