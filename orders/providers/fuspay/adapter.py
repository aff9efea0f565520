"""Fuspay Axis adapter: event verification and parsing, polling, sell-order creation.

The provider status of a Fuspay order is its event name. ``sell.event.close``
means a refund only with ``meta_data.status == "refunded"``; any other close is
reported as ``sell.event.close:<status>``, which the status map does not know, so
the store records it and raises ``unknown_status``. Unknown event names pass
through unchanged for the same treatment. Dedup key: ``event:<provider status>``
(docs/providers.md: Fuspay's idempotency key is ``(partner_order_id, event_name)``).

Details keep only order facts (address, tx hash, network, payment sub-statuses,
payout status, KYC error type); names, e-mails, phones and account numbers stay
in the raw body, which only the event history holds.

Polling: GetOrder's ``data`` is undocumented (doc bug F-10), so it is read
defensively: a dict or a one-element list; its ``event_name`` when present,
otherwise a status derived from the payment sub-statuses. A sell reported paid
out is confirmed with FetchTransferStatus, where only COMPLETED or SUCCESSFUL
means paid (docs/providers.md 2.3); until then it stays ``event.sell.received.crypto``
and GetOrder's word is kept as the event's ``claimed_status`` (shown in the
timeline as a claim, never applied). A poll event's raw body is GetOrder's
answer, followed on a new line by FetchTransferStatus's when that was asked.

Trust: an event's signature covers its whole body (less ``signature``), and a
poll is an answer to our own authenticated request, so both cover every field
(``COVERS``). Two events with the same signed content are one delivery
(``identity``), however their bytes are spaced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from marshmallow import Schema, ValidationError, fields, validate

from orders.errors import (
    ProviderRejected,
    ProviderResponseInvalid,
    SignatureInvalid,
)
from orders.events import COVERS_ALL, Event, utcnow
from orders.providers.fuspay import signing
from orders.providers.fuspay.client import GET_ORDER_PATH, Answer, FuspayClient
from orders.providers.fuspay.settings import FuspaySettings
from orders.providers.fuspay.statuses import STATUS_MAP
from orders.providers.payload import amount, load, order_hint, parse_json_object
from orders.providers.payload import creation_event as payload_creation_event

SLUG = "fuspay"
COVERS: Mapping[str, tuple[str, ...]] = {"callback": COVERS_ALL, "poll": COVERS_ALL, "create": COVERS_ALL}
KINDS = ("sell", "buy")
CLOSE = "sell.event.close"
REFUNDED = "refunded"
SELL_CREDITED = "event.sell.credited.fiat"
SELL_RECEIVED = "event.sell.received.crypto"
PAID = frozenset({"PAID", "COMPLETED"})
PAYOUT_PAID = frozenset({"COMPLETED", "SUCCESSFUL"})
MAX_ID = 128
PERSONAL_FIELDS = (
    "seller_phone",
    "seller_email",
    "first_name",
    "last_name",
    "account_name",
    "account_number",
)


class EventSchema(Schema):
    """What a Fuspay event must carry; every other field is kept in the raw body."""

    class Meta:
        unknown = "include"

    event_name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    partner_order_id = fields.String(required=True, validate=validate.Length(min=1, max=MAX_ID))


# Built once: a schema is stateless while loading, and building one per callback costs.
EVENT_SCHEMA = EventSchema()


def payment_status(value: Any) -> str | None:
    """A payment sub-status in upper case, ``Cancelled`` spelt ``CANCELED`` (doc bug F-5)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().upper()
    return "CANCELED" if text == "CANCELLED" else text


def provider_status(data: Mapping[str, Any]) -> str:
    """The event name, with a close that is not a refund told apart."""
    name = str(data.get("event_name"))
    if name != CLOSE:
        return name
    meta = data.get("meta_data")
    status = meta.get("status") if isinstance(meta, dict) else None
    if isinstance(status, str) and status.strip().lower() == REFUNDED:
        return CLOSE
    return f"{CLOSE}:{status if isinstance(status, str) else '<missing>'}"


def kind_of(event_name: str) -> str | None:
    parts = event_name.split(".")
    for kind in KINDS:
        if kind in parts:
            return kind
    return None


def _amount(data: Mapping[str, Any], *names: str, strict: bool) -> str | None:
    """The first of ``names`` present in ``data``, as an amount (``payload.amount``)."""
    for name in names:
        if data.get(name) not in (None, ""):
            return amount(data.get(name), name, strict=strict)
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def crypto_currency(chain: Any) -> str | None:
    """``usdt-trc20`` -> ``USDT``."""
    if not isinstance(chain, str) or not chain.strip():
        return None
    return chain.strip().split("-", 1)[0].upper() or None


def event_from_body(
    data: Mapping[str, Any],
    raw: str,
    *,
    verified_by: str,
    source: str,
    received_at: datetime,
    status: str | None = None,
    extra: Mapping[str, Any] | None = None,
    claimed_status: str | None = None,
    fetched_at: datetime | None = None,
    identity: str | None = None,
) -> Event:
    """An Event from a Fuspay order object (an event body, or GetOrder's data)."""
    status = status or provider_status(data)
    kind = kind_of(status)
    details = {
        "wallet_address": _text(data.get("pay_to_crypto_address")),
        "tx_hash": _text(data.get("seller_crypto_txn_hash")) or _text(data.get("crypto_txn_hash")),
        "network": _text(data.get("chain")),
        "fiat_payment_status": payment_status(data.get("fiat_payment_status")),
        "crypto_payment_status": payment_status(data.get("crypto_payment_status")),
        "kyc_error_type": _text(data.get("kyc_error_type")),
        **(extra or {}),
    }
    return Event(
        provider=SLUG,
        external_order_id=str(data["partner_order_id"]),
        provider_status=status,
        source=source,
        dedup_key=f"event:{status}",
        raw_body=raw,
        received_at=received_at.isoformat(),
        verified_by=verified_by,
        provider_order_id=_text(data.get("fuspay_order_ref")),
        kind=kind,
        fiat_amount=_amount(
            data, "fiat_amount_to_receive", "fiat_amount_to_pay", strict=source == "callback"
        ),
        fiat_currency=_text(data.get("fiat_currency")),
        crypto_amount=_amount(
            data, "crypto_amount_to_sell", "crypto_amount_to_receive", strict=source == "callback"
        ),
        crypto_currency=crypto_currency(data.get("chain")),
        details={k: v for k, v in details.items() if v is not None},
        covers=COVERS[source],
        claimed_status=claimed_status,
        fetched_at=fetched_at.isoformat() if fetched_at else None,
        identity=identity,
    )


def derived_status(data: Mapping[str, Any], kind: str) -> str:
    """The event an order object without ``event_name`` has reached, from its
    payment sub-statuses (sell payouts are confirmed separately)."""
    fiat = payment_status(data.get("fiat_payment_status"))
    crypto = payment_status(data.get("crypto_payment_status"))
    meta = data.get("meta_data")
    if kind == "sell" and isinstance(meta, dict) and str(meta.get("status")).lower() == REFUNDED:
        return CLOSE
    if "CANCELED" in (fiat, crypto):
        return f"event.{kind}.error"
    if kind == "sell":
        if crypto not in PAID:
            return "event.sell.init"
        if fiat in PAID:
            return SELL_CREDITED
        return "event.sell.received.fiat_kyc_error" if _text(data.get("kyc_error_type")) else SELL_RECEIVED
    if fiat not in PAID:
        return "event.buy.init"
    return "event.buy.credited.crypto" if crypto in PAID else "event.buy.received.fiat"


def order_from_answer(answer: Any, order_no: str, partner_id: str) -> dict[str, Any] | None:
    """GetOrder's order object for ``order_no``: None when the answer holds no order;
    ProviderResponseInvalid when it is unreadable or about another order."""
    if not isinstance(answer, dict):
        raise ProviderResponseInvalid(f"fuspay {GET_ORDER_PATH}: answer is not an object")
    data = answer.get("data")
    if data is None or data == [] or data == {}:
        return None
    if isinstance(data, list):
        mine = [d for d in data if isinstance(d, dict) and _is_about(d, order_no, partner_id)]
        if len(data) == 1 and isinstance(data[0], dict):
            data = data[0]
        elif len(mine) == 1:
            data = mine[0]
        else:
            raise ProviderResponseInvalid(f"fuspay {GET_ORDER_PATH}: {len(data)} orders in the answer")
    if not isinstance(data, dict):
        raise ProviderResponseInvalid(f"fuspay {GET_ORDER_PATH}: data is not an order object")
    if not _is_about(data, order_no, partner_id):
        raise ProviderResponseInvalid(f"fuspay {GET_ORDER_PATH}: answer is about another order")
    return {**data, "partner_order_id": order_no}


def _is_about(data: Mapping[str, Any], order_no: str, partner_id: str) -> bool:
    if "partner_order_id" in data:
        return data["partner_order_id"] == order_no
    # fuspay_order_ref is "<partner_order_id>_<partner id>" (docs/providers.md 2.3)
    return data.get("fuspay_order_ref") == f"{order_no}_{partner_id}"


class FuspayAdapter:
    slug = SLUG
    status_map = STATUS_MAP
    callbacks_are_triggers = False  # the signature covers the whole body
    covers = COVERS

    def __init__(self, settings: FuspaySettings, session: requests.Session | None = None):
        self.settings = settings
        self.client = FuspayClient(settings, session)

    # -- callbacks

    def parse_callback(self, body: bytes, headers: Mapping[str, str], received_at: datetime) -> Event:
        data = parse_json_object(body)
        load(EVENT_SCHEMA, data)
        signature = data.get("signature")
        if not isinstance(signature, str) or not signature:
            raise SignatureInvalid("missing signature")
        verified_by = self.verify(data, signature)
        if verified_by is None:
            raise SignatureInvalid("signature does not verify with any configured Fuspay key")
        return event_from_body(
            data,
            body.decode("utf-8"),
            verified_by=verified_by,
            source="callback",
            received_at=received_at,
            identity=signing.serialise(signing.unsigned(data)),
        )

    def verify(self, data: Mapping[str, Any], signature: str) -> str | None:
        """The names of the settings whose key verifies ``signature``, or None.
        Raises ProviderUnavailable when the oracle is unreachable."""
        body = signing.unsigned(data)
        keys = signing.candidate_keys(self.settings)
        recipe = self.settings.signature_recipe
        if recipe == signing.ORACLE:
            name = self.client.verify_by_oracle(body, signature, keys)
            return None if name is None else f"oracle:{name}"
        return signing.verify(body, signature, keys, recipe)

    def order_hint(self, body: bytes) -> str | None:
        return order_hint(body, "partner_order_id")

    # -- polling

    def poll(
        self, external_order_id: str, *, kind: str | None = None, provider_order_id: str | None = None
    ) -> Event:
        if not external_order_id and provider_order_id:
            # fuspay_order_ref is "<partner_order_id>_<partner id>" (docs/providers.md 2.3)
            external_order_id = provider_order_id.removesuffix(f"_{self.settings.partner_id}")
        kinds = (kind,) if kind in KINDS else KINDS
        misses: list[str] = []
        fetched_at = utcnow()
        for candidate in kinds:
            try:
                answer = self.client.get_order(external_order_id, candidate)
            except ProviderRejected as exc:
                if exc.status in (401, 403):
                    raise
                misses.append(f"{candidate}: {exc}")
                continue
            order = order_from_answer(answer.body, external_order_id, self.settings.partner_id)
            if order is None:
                misses.append(f"{candidate}: no order in the answer")
                continue
            return self._poll_event(order, answer, candidate, fetched_at)
        raise ProviderRejected(
            f"fuspay {GET_ORDER_PATH}: order {external_order_id!r} not found ({'; '.join(misses)})",
            status=404,
        )

    def _poll_event(self, order: dict[str, Any], answer: Answer, kind: str, fetched_at: datetime) -> Event:
        name = order.get("event_name")
        status = provider_status(order) if isinstance(name, str) and name else derived_status(order, kind)
        raw = answer.raw
        extra: dict[str, Any] = {}
        claimed = None
        if status == SELL_CREDITED:
            payout, payout_raw = self._payout_status(order["partner_order_id"])
            raw = f"{raw}\n{payout_raw}" if payout_raw else raw
            extra["payout_status"] = payout
            if payout not in PAYOUT_PAID:
                claimed, status = status, SELL_RECEIVED
        return event_from_body(
            order,
            raw,
            verified_by="FUSPAY_SECRET_KEY:request",
            source="poll",
            received_at=utcnow(),
            status=status,
            extra=extra,
            claimed_status=claimed,
            fetched_at=fetched_at,
        )

    def _payout_status(self, partner_order_id: str) -> tuple[str | None, str]:
        """FetchTransferStatus's status (upper case) and raw answer. A refusal (no
        transfer yet) is no status; unavailability propagates."""
        try:
            answer = self.client.transfer_status(partner_order_id)
        except ProviderRejected as exc:
            return None, json.dumps({"FetchTransferStatus": str(exc)})
        data = answer.body.get("data") if isinstance(answer.body, dict) else None
        status = data.get("status") if isinstance(data, dict) else None
        return payment_status(status), answer.raw

    # -- creation

    def validate_create(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The validated InitiateSellOrder body (plus ``kind``); InvalidPayload names every bad field."""
        payload = dict(request)
        if payload.get("partner_callback_url") is None and self.settings.callback_url is not None:
            payload["partner_callback_url"] = self.settings.callback_url
        return load(SellOrderSchema(), payload)

    def creation_event(self, request: Mapping[str, Any], received_at: datetime) -> Event:
        """The record of our own creation request (no provider status; no personal data)."""
        return payload_creation_event(
            SLUG,
            request,
            received_at,
            external_order_id=request["partner_order_id"],
            kind="sell",
            personal=PERSONAL_FIELDS,
            fiat_currency=request.get("fiat_currency_to_receive"),
            crypto_amount=amount(request.get("crypto_amount"), "crypto_amount"),
            crypto_currency=crypto_currency(request.get("chain")),
        )

    def submit_create(self, request: Mapping[str, Any]) -> Event | None:
        """Send the sell order. Fuspay answers only ``{"message": "OK"}`` (doc bug F-12):
        None, the order stays CREATED until ``event.sell.init`` or the first poll."""
        body = {k: v for k, v in request.items() if k != "kind"}
        self.client.initiate_sell_order(body)
        return None


def _positive_decimal(value: str) -> None:
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise ValidationError("must be a decimal number") from exc
    if not number.is_finite() or number <= 0:
        raise ValidationError("must be a positive number")


def _non_negative_decimal(value: str) -> None:
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise ValidationError("must be a decimal number") from exc
    if not number.is_finite() or number < 0:
        raise ValidationError("must be zero or more")


def _text_field(max_length: int = 128, **kw: Any) -> fields.String:
    return fields.String(required=True, validate=validate.Length(min=1, max=max_length), **kw)


class SellOrderSchema(Schema):
    """InitiateSellOrder as documented (seed S4): every field required, all strings."""

    class Meta:
        unknown = "raise"

    kind = fields.String(load_default="sell", validate=validate.OneOf(["sell"]))
    partner_order_id = _text_field(MAX_ID)
    chain = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9]{2,16}-[A-Za-z0-9]{2,16}$"))
    crypto_amount = fields.String(required=True, validate=_positive_decimal)
    fiat_currency_to_receive = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{3}$"))
    partner_callback_url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    seller_phone = _text_field(32)
    seller_email = fields.Email(required=True)
    first_name = _text_field()
    last_name = _text_field()
    account_name = _text_field()
    account_number = _text_field(64)
    account_code = _text_field(64)
    intrapay_merchant_id = _text_field()
    markup_fee = fields.String(required=True, validate=_non_negative_decimal)
    refund_wallet_address = _text_field()
