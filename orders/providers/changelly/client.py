"""The Changelly Fiat API client: list/poll orders (``GET /v1/orders``) and create sell orders.

Every request carries ``X-Api-Key`` and ``X-Api-Signature`` over the full URL as
sent plus the body as sent (``{}`` for a GET; ``signing``). The query string is
built here, one ``name=value`` per filter (``orderId=``, not ``orderId[0]=``: doc
bug C-6), and the body is serialised once and sent as those bytes. Answers are
not signed by Changelly; they are believed because they come over TLS in answer
to our authenticated request.

Error policy (each becomes a named exception; messages never hold keys or
signatures): Changelly's error body ``{errorType, errorMessage, errorDetails}``
on a 4xx -> ``ProviderRejected`` with ``code=errorType`` (do not retry as is);
429 -> ``ChangellyRateLimited``, a ``ProviderUnavailable`` carrying the
``Retry-After`` seconds; 408, 5xx, timeouts and connection failures ->
``ProviderUnavailable`` (retry later); a 2xx that is not the JSON expected ->
``ProviderResponseInvalid``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import requests

from config import ChangellySettings
from orders.errors import ProviderRejected, ProviderResponseInvalid, ProviderUnavailable
from orders.providers.changelly import signing

ORDERS_PATH = "/v1/orders"
SELL_ORDERS_PATH = "/v1/sell/orders"
MAX_LIMIT = 100  # GET /v1/orders: limit 1..100
MAX_RETRY_AFTER = 3600.0

log = logging.getLogger("rampwatch.providers.changelly")


class ChangellyRateLimited(ProviderUnavailable):
    """HTTP 429: ``retry_after`` is the seconds Changelly asked us to wait (None when unsaid)."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = 429):
        self.retry_after = retry_after
        super().__init__(message, status=status, code="tooManyRequests")


@dataclass(frozen=True)
class Answer:
    """A 2xx JSON answer: the parsed value and the text it came in."""

    data: Any
    raw: str


@dataclass(frozen=True)
class OrdersPage:
    """One answer of ``GET /v1/orders`` in either shape (doc bug C-6): ``total`` is
    None for the top-level-array shape, which carries no paging fields."""

    orders: list[dict[str, Any]]
    total: int | None
    raw: str


class ChangellyClient:
    def __init__(self, settings: ChangellySettings, session: requests.Session | None = None):
        self.settings = settings
        self.session = session or requests.Session()

    # -- endpoints

    def orders(self, params: Sequence[tuple[str, str]]) -> OrdersPage:
        """``GET /v1/orders`` with these filters, in this order."""
        answer = self.request("GET", ORDERS_PATH, params=params)
        return parse_orders_page(answer)

    def create_sell_order(self, body: Mapping[str, Any]) -> Answer:
        """``POST /v1/sell/orders``; the answer must be a JSON object (checked by the caller)."""
        answer = self.request("POST", SELL_ORDERS_PATH, body=body)
        if not isinstance(answer.data, dict):
            raise ProviderResponseInvalid(f"changelly POST {SELL_ORDERS_PATH}: answer is not an object")
        return answer

    # -- transport

    def url(self, path: str, params: Sequence[tuple[str, str]] = ()) -> str:
        url = self.settings.base_url.rstrip("/") + path
        return url + "?" + urlencode(list(params)) if params else url

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
    ) -> Answer:
        """One signed call; its 2xx JSON answer, or a named exception (module docstring)."""
        what = f"changelly {method} {path}"
        url = self.url(path, params)
        data = signing.body_bytes(dict(body)) if body is not None else None
        headers = {"Accept": "application/json", signing.API_KEY_HEADER: self.settings.api_key}
        if data is not None:
            headers["Content-Type"] = "application/json"
        prepared = self.session.prepare_request(requests.Request(method, url, data=data, headers=headers))
        # Sign the URL requests will send. It is ``url`` itself for every URL built
        # here (urlencode output survives requote_uri); only an odd base_url (say,
        # an upper-case host) is normalised, and then the normalised form is sent.
        sent_url = prepared.url or url
        prepared.headers[signing.SIGNATURE_HEADER] = signing.sign_request(
            sent_url, data, self.settings.private_key.value
        )
        send = self.session.merge_environment_settings(sent_url, {}, None, None, None)
        try:
            resp = self.session.send(prepared, timeout=self.settings.timeout, allow_redirects=False, **send)
        except requests.Timeout as exc:
            raise ProviderUnavailable(f"{what}: timed out", code="timeout") from exc
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"{what}: {type(exc).__name__}") from exc
        return self._answer(what, resp)

    @staticmethod
    def _answer(what: str, resp: requests.Response) -> Answer:
        status = resp.status_code
        error = _error_body(resp)
        if status == 429:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            raise ChangellyRateLimited(f"{what}: HTTP 429 tooManyRequests", retry_after=retry_after)
        if status == 408 or status >= 500:
            code = error[0] if error else None
            raise ProviderUnavailable(f"{what}: HTTP {status}{_describe(error)}", status=status, code=code)
        if status >= 300:
            code = error[0] if error else None
            raise ProviderRejected(f"{what}: HTTP {status}{_describe(error)}", status=status, code=code)
        try:
            data = json.loads(resp.content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProviderResponseInvalid(f"{what}: answer is not UTF-8 JSON", status=status) from exc
        return Answer(data=data, raw=resp.content.decode("utf-8"))


def parse_orders_page(answer: Answer) -> OrdersPage:
    """Both shapes of ``GET /v1/orders`` (doc bug C-6): ``{orders, limit, offset, total}``
    as the schema says, or the sample's top-level array."""
    data = answer.data
    total: int | None = None
    if isinstance(data, dict):
        orders = data.get("orders")
        raw_total = data.get("total")
        if raw_total is not None:
            if isinstance(raw_total, bool) or not isinstance(raw_total, int) or raw_total < 0:
                raise ProviderResponseInvalid(f"changelly GET {ORDERS_PATH}: total is not a count")
            total = raw_total
    elif isinstance(data, list):
        orders = data
    else:
        raise ProviderResponseInvalid(f"changelly GET {ORDERS_PATH}: answer is neither an object nor a list")
    if not isinstance(orders, list) or not all(isinstance(o, dict) for o in orders):
        raise ProviderResponseInvalid(f"changelly GET {ORDERS_PATH}: orders is not a list of objects")
    return OrdersPage(orders=orders, total=total, raw=answer.raw)


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


def _error_body(resp: requests.Response) -> tuple[str, str, str] | None:
    """(errorType, errorMessage, details) of Changelly's error schema, or None."""
    try:
        data = json.loads(resp.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("errorType"), str):
        return None
    message = data.get("errorMessage")
    parts = []
    details = data.get("errorDetails")
    if isinstance(details, list):
        for item in details[:5]:
            if isinstance(item, dict):
                parts.append(f"{_short(item.get('cause'))}={_short(item.get('value'))}")
    return (
        _short(data["errorType"], 64),
        _short(message) if isinstance(message, str) else "",
        ", ".join(parts),
    )


def _describe(error: tuple[str, str, str] | None) -> str:
    if error is None:
        return ""
    kind, message, details = error
    out = f" {kind}: {message or 'no message'}"
    return out + f" ({details})" if details else out


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
