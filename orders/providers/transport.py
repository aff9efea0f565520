"""One way to call a provider's API and to read what its failures mean, for every client.

* Redirects are never followed: a signed request and our credentials go only to
  the configured base URL.
* Every call has the provider's timeout.
* A timeout, a connection failure, 408 and 5xx are ``ProviderUnavailable``
  (transient: retry later); 429 is ``ProviderRateLimited``, which also carries
  the ``Retry-After`` seconds; any other status from 300 up is
  ``ProviderRejected`` (do not retry as is). Each client says how to read its
  provider's error body (``Describe``), so the message and code are the
  provider's own, with nothing secret in them.
* A 2xx answer is returned for the client to read (``json_answer`` when it must
  be JSON: ``ProviderResponseInvalid`` otherwise).
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests

from orders.errors import (
    InvalidPayload,
    ProviderRateLimited,
    ProviderRejected,
    ProviderResponseInvalid,
    ProviderUnavailable,
)
from orders.providers.payload import parse_json

MAX_RETRY_AFTER = 3600.0

# (code, human message) of a provider's error answer; either may be empty.
Describe = Callable[[requests.Response], tuple[str | None, str]]


def send(
    session: requests.Session,
    request: requests.Request | requests.PreparedRequest,
    *,
    what: str,
    timeout: float,
    describe: Describe | None = None,
) -> requests.Response:
    """Send ``request`` (never following a redirect); the response if it is 2xx, else
    the named error its status means."""
    prepared = request if isinstance(request, requests.PreparedRequest) else session.prepare_request(request)
    settings = session.merge_environment_settings(prepared.url, {}, None, None, None)
    try:
        resp = session.send(prepared, timeout=timeout, allow_redirects=False, **settings)
    except requests.Timeout as exc:
        raise ProviderUnavailable(f"{what}: timed out", code="timeout") from exc
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"{what}: {type(exc).__name__}") from exc
    check(what, resp, describe)
    return resp


def check(what: str, resp: requests.Response, describe: Describe | None = None) -> None:
    """Raise what a non-2xx status means (module docstring)."""
    status = resp.status_code
    if status < 300:
        return
    code, message = describe(resp) if describe is not None else (None, "")
    text = f"{what}: HTTP {status}" + (f": {message}" if message else "")
    if status == 429:
        raise ProviderRateLimited(
            text,
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            code=code or "tooManyRequests",
        )
    if status == 408 or status >= 500:
        raise ProviderUnavailable(text, status=status, code=code)
    raise ProviderRejected(text, status=status, code=code)


def json_answer(what: str, resp: requests.Response) -> Any:
    """A 2xx answer's JSON value, read within the bounds every callback is read in
    (``payload.parse_json``); ProviderResponseInvalid when it is not UTF-8 JSON or
    out of those bounds (a data error: asking again will not help)."""
    try:
        return parse_json(resp.content)
    except InvalidPayload as exc:
        raise ProviderResponseInvalid(
            f"{what}: answer is not usable JSON ({exc})", status=resp.status_code
        ) from exc


def json_body(resp: requests.Response) -> Any:
    """The response's JSON value, or None when it has none (for reading error bodies)."""
    try:
        return parse_json(resp.content)
    except InvalidPayload:
        return None


def message_of(answer: Any, *keys: str) -> str:
    """The first non-empty string among ``keys`` of an error answer, shortened."""
    if isinstance(answer, dict):
        for key in keys or ("message", "error", "errorMessage"):
            value = answer.get(key)
            if isinstance(value, str) and value:
                return value[:200]
    return ""


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), capped at an hour; None if unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
