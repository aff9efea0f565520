"""The Fuspay Axis API client: GetOrder (polling), FetchTransferStatus, InitiateSellOrder,
and the signing oracle.

Every request carries ``Authorization: Bearer <FUSPAY_SECRET_KEY>`` and
``x-partner-id`` (docs/providers.md 2.1; the public-key bearer of other Fuspay products,
doc bug F-8, is not used). Fuspay's answers are not signed: what vouches for
them is the authenticated TLS request. Errors become named exceptions as for
every provider (``orders.providers.transport``), plus ``ProviderRejected`` for a
2xx ``{error: true}`` or ``success: false``. No message ever carries a key.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from config import Named
from orders.errors import ProviderRejected, ProviderResponseInvalid, ProviderUnavailable
from orders.providers import transport
from orders.providers.fuspay import signing
from orders.providers.fuspay.settings import FuspaySettings
from orders.providers.jsformat import js_stringify

GET_ORDER_PATH = "/Axis/GetOrder/"
TRANSFER_STATUS_PATH = "/Axis/FetchTransferStatus"
SELL_ORDER_PATH = "/Axis/InitiateSellOrder/"
ORACLE_PATH = "/PartnerP2P/SignRequestSha512/"


@dataclass(frozen=True)
class Answer:
    """A Fuspay answer: the parsed JSON and the text it came in."""

    body: Any
    raw: str


class FuspayClient:
    def __init__(self, settings: FuspaySettings, session: requests.Session | None = None):
        self.settings = settings
        self.session = session or requests.Session()

    # -- endpoints

    def get_order(self, order_no: str, kind: str) -> Answer:
        """``GET /Axis/GetOrder/?order_type=<kind>&order_no=<order_no>``."""
        return self._call("GET", GET_ORDER_PATH, params={"order_type": kind, "order_no": order_no})

    def transfer_status(self, partner_order_id: str) -> Answer:
        """``GET /Axis/FetchTransferStatus?partner_order_id=...``: the sell payout."""
        return self._call("GET", TRANSFER_STATUS_PATH, params={"partner_order_id": partner_order_id})

    def initiate_sell_order(self, body: Mapping[str, Any]) -> Answer:
        """``POST /Axis/InitiateSellOrder/``; Fuspay answers ``{"message": "OK"}``."""
        return self._call("POST", SELL_ORDER_PATH, body=body)

    def oracle_sign(self, body_without_signature: Mapping[str, Any], key: str) -> str:
        """Fuspay's own signature of a body, from ``SignRequestSha512`` (the field it
        answers in is unconfirmed: ``signature``, ``data.signature`` or ``data``)."""
        answer = self._call("POST", ORACLE_PATH, body={**body_without_signature, "secret": key})
        found = _oracle_signature(answer.body)
        if found is None:
            raise ProviderResponseInvalid(f"fuspay {ORACLE_PATH}: answer carries no signature")
        return found

    def verify_by_oracle(
        self, body_without_signature: Mapping[str, Any], signature: str, keys: list[Named[str]]
    ) -> str | None:
        """The name of the key whose oracle signature equals ``signature``, or None.

        One overall deadline (``settings.timeout``) bounds the whole check, however
        many keys are configured: it runs inside a webhook request, which must
        answer (503, so Fuspay retries) well before the web worker's own timeout."""
        deadline = time.monotonic() + self.settings.timeout
        for key in keys:
            if time.monotonic() >= deadline:
                raise ProviderUnavailable("fuspay signing oracle: too slow to check every key; retry later")
            if signing.same(self.oracle_sign(body_without_signature, key.value), signature):
                return key.name
        return None

    # -- transport

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Answer:
        s = self.settings
        headers = {"Authorization": f"Bearer {s.secret_key}", "x-partner-id": s.partner_id}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = js_stringify(dict(body)).encode("utf-8")
        what = f"fuspay {path}"
        request = requests.Request(method, s.base_url + path, params=params, data=data, headers=headers)
        resp = transport.send(self.session, request, what=what, timeout=s.timeout, describe=self._describe)
        answer = transport.json_answer(what, resp)
        if isinstance(answer, dict) and (answer.get("error") is True or answer.get("success") is False):
            raise ProviderRejected(f"{what}: {self._message(answer)}", status=resp.status_code)
        return Answer(body=answer, raw=resp.text)

    def _describe(self, resp: requests.Response) -> tuple[str | None, str]:
        return None, self._redact(transport.message_of(transport.json_body(resp)))

    def _message(self, answer: Any) -> str:
        return self._redact(transport.message_of(answer) or "no message")

    def _redact(self, text: str) -> str:
        """``text`` without our keys (a provider may echo what it was sent)."""
        for named in (*self.settings.secret_keys, *self.settings.public_keys):
            if named.value:
                text = text.replace(named.value, "***")
        return text


def _oracle_signature(answer: Any) -> str | None:
    if not isinstance(answer, dict):
        return None
    data = answer.get("data")
    for candidate in (
        answer.get("signature"),
        data.get("signature") if isinstance(data, dict) else None,
        data,
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None
