"""The Changelly Fiat API client: list/poll orders (``GET /v1/orders``) and create sell orders.

Every request carries ``X-Api-Key`` and ``X-Api-Signature`` over the full URL as
sent plus the body as sent (``{}`` for a GET; ``signing``). The query string is
built here, one ``name=value`` per filter (``orderId=``, not ``orderId[0]=``: doc
bug C-6), and the body is serialised once and sent as those bytes. Answers are
not signed by Changelly; they are believed because they come over TLS in answer
to our authenticated request.

Errors become named exceptions as for every provider
(``orders.providers.transport``; messages never hold keys or signatures), with
Changelly's error body ``{errorType, errorMessage, errorDetails}`` read for the
message and ``code=errorType``; 429 is ``ProviderRateLimited`` with the
``Retry-After`` seconds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

from orders.errors import ProviderResponseInvalid
from orders.providers import transport
from orders.providers.changelly import signing
from orders.providers.changelly.settings import ChangellySettings

ORDERS_PATH = "/v1/orders"
SELL_ORDERS_PATH = "/v1/sell/orders"
MAX_LIMIT = 100  # GET /v1/orders: limit 1..100
MAX_RETRY_AFTER = 3600.0

log = logging.getLogger("rampwatch.providers.changelly")


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
        resp = transport.send(
            self.session, prepared, what=what, timeout=self.settings.timeout, describe=_describe_error
        )
        data = transport.json_answer(what, resp)
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


def _error_body(resp: requests.Response) -> tuple[str, str, str] | None:
    """(errorType, errorMessage, details) of Changelly's error schema, or None."""
    data = transport.json_body(resp)
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


def _describe_error(resp: requests.Response) -> tuple[str | None, str]:
    """Changelly's error schema as (errorType, "errorType: errorMessage (details)")."""
    error = _error_body(resp)
    if error is None:
        return None, ""
    kind, message, details = error
    text = f"{kind}: {message or 'no message'}"
    return kind, f"{text} ({details})" if details else text


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
