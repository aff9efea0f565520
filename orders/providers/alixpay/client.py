"""The AliX Pay API client: order detail (polling), create sell order, create cash-out.

Every request is signed with our private key over the documented pipe-joined
fields plus ``ALIXPAY_SECRET_KEY``; every answer is verified with AliX's public
key before anything in it is believed. Both answer shapes are handled: the bare
order object of the docs and the ``{success, message, data, errorCode}`` envelope
of the public SDK (doc bug A-13). Errors become named exceptions as for every provider (``orders.providers.transport``),
plus ``ProviderRejected`` for an envelope with ``success: false`` and
``ProviderResponseInvalid`` when an answer is unreadable or its signature does
not verify.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from orders.errors import ProviderRejected, ProviderResponseInvalid
from orders.providers import transport
from orders.providers.alixpay import signing
from orders.providers.alixpay.settings import AlixPaySettings

DETAILS_PATH = "/api/v2/orders/details"
SELL_ORDER_PATH = "/api/v2/on-off-ramp/create-sell-order"
CASHOUT_PATH = "/api/v2/orders/create-cashout"

SELL_SIGNED = ("partnerCode", "externalOrderId", "currency", "amount", "network", "paymentMethod", "bankCode")


@dataclass(frozen=True)
class VerifiedOrder:
    """An AliX order object whose signature verified, and the raw answer it came in."""

    body: dict[str, Any]
    raw: str
    verified_by: str


class AlixPayClient:
    def __init__(self, settings: AlixPaySettings, session: requests.Session | None = None):
        self.settings = settings
        self.session = session or requests.Session()
        self._last_secret = ""  # the setting name of the secret that verified last

    # -- endpoints

    def order_details(self, external_order_id: str) -> VerifiedOrder:
        s = self.settings
        body = {
            "partnerCode": s.partner_code,
            "externalOrderId": external_order_id,
            "signature": signing.sign([s.partner_code, external_order_id], s.secret_key, s.private_key.value),
        }
        answer = self._post(DETAILS_PATH, body)
        self._same_order(DETAILS_PATH, answer, external_order_id)
        return answer

    def create_sell_order(self, order: Mapping[str, Any]) -> VerifiedOrder:
        """Off-ramp sell order. ``order`` holds the documented body fields but
        ``partnerCode``, ``webhookSecretKey`` and ``signature``, which are added here."""
        s = self.settings
        body = {**order, "partnerCode": s.partner_code, "webhookSecretKey": s.webhook_secret_key}
        body.setdefault("paymentMethod", "bank")
        fields = [body.get(name) for name in SELL_SIGNED]
        body["signature"] = signing.sign(fields, s.secret_key, s.private_key.value)
        answer = self._post(SELL_ORDER_PATH, body)
        self._same_order(SELL_ORDER_PATH, answer, str(body.get("externalOrderId")))
        return answer

    def create_cashout(self, order: Mapping[str, Any]) -> VerifiedOrder:
        """Remittance cash-out (VND). The documented signed string names fields the
        body does not have (doc bug A-8); they are taken from where the body keeps
        them: currency <- cryptoCurrency, bankCode/bankAccountNumber/content <-
        extendInfo.recipientBankCode/recipientNumber/transferContent."""
        s = self.settings
        body = {**order, "partnerCode": s.partner_code, "webhookSecretKey": s.webhook_secret_key}
        extend = body.get("extendInfo") or {}
        fields = [
            s.partner_code,
            body.get("externalOrderId"),
            body.get("cryptoCurrency"),
            body.get("fiatAmount"),
            extend.get("recipientBankCode"),
            extend.get("recipientNumber"),
            extend.get("transferContent"),
            body.get("userEmail"),
        ]
        body["signature"] = signing.sign(fields, s.secret_key, s.private_key.value)
        answer = self._post(CASHOUT_PATH, body)
        self._same_order(CASHOUT_PATH, answer, str(body.get("externalOrderId")))
        return answer

    @staticmethod
    def _same_order(path: str, answer: VerifiedOrder, external_order_id: str) -> None:
        # A validly signed answer about another order must not be filed under that one.
        if answer.body.get("externalOrderId") != external_order_id:
            raise ProviderResponseInvalid(f"alixpay {path}: answer is about another order")

    # -- transport

    def _post(self, path: str, body: dict[str, Any]) -> VerifiedOrder:
        what = f"alixpay {path}"
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        request = requests.Request(
            "POST",
            self.settings.base_url + path,
            data=data,
            headers={"Content-Type": "application/json", "lang": "en"},
        )
        resp = transport.send(
            self.session, request, what=what, timeout=self.settings.timeout, describe=_describe
        )
        order = self._unwrap(path, transport.json_answer(what, resp), resp.status_code)
        verified_by = self.verify(order)
        if verified_by is None:
            raise ProviderResponseInvalid(f"{what}: response signature does not verify")
        return VerifiedOrder(body=order, raw=resp.text, verified_by=verified_by)

    @staticmethod
    def _unwrap(path: str, answer: Any, status: int) -> dict[str, Any]:
        if not isinstance(answer, dict):
            raise ProviderResponseInvalid(f"alixpay {path}: answer is not an object", status=status)
        if "success" in answer and ("data" in answer or "message" in answer):
            if answer.get("success") is not True:
                code = answer.get("errorCode")
                raise ProviderRejected(
                    f"alixpay {path}: {_message(answer)}",
                    status=status,
                    code=None if code is None else str(code),
                )
            answer = answer.get("data")
            if not isinstance(answer, dict):
                raise ProviderResponseInvalid(f"alixpay {path}: envelope without an order", status=status)
        if "error" in answer and "externalOrderId" not in answer:
            raise ProviderRejected(f"alixpay {path}: {_message(answer)}", status=status)
        return answer

    def verify(self, order: Mapping[str, Any]) -> str | None:
        """The setting names that verify an order object's ``signature``, or None."""
        sig = order.get("signature")
        if not isinstance(sig, str) or not sig:
            return None
        s = self.settings
        secrets = [*s.secret_keys, *s.webhook_secret_keys]
        # Which secret AliX ends the string with is unconfirmed: try the one
        # that verified last first, so a steady stream costs one RSA check, not two.
        secrets.sort(key=lambda n: n.name != self._last_secret)
        verified = signing.verify(signing.response_fields(dict(order)), sig, s.public_keys, secrets)
        if verified is not None:
            self._last_secret = verified.split("+", 1)[1]
        return verified


def _describe(resp: requests.Response) -> tuple[str | None, str]:
    """AliX's error answer: ``errorCode`` and ``message``."""
    body = transport.json_body(resp)
    code = body.get("errorCode") if isinstance(body, dict) else None
    return (None if code is None else str(code)), transport.message_of(body)


def _message(answer: Any) -> str:
    return transport.message_of(answer) or "no message"
