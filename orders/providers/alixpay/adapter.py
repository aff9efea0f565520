"""AliX Pay adapter: IPN verification and parsing, polling, order objects -> Events.

What an IPN's signature covers: ``externalOrderId``, ``type``, ``fiatAmount`` and
``status``, nothing else. So an IPN event covers those (``COVERS``) and carries
no details; amounts beyond ``fiatAmount``, tx hashes and addresses are taken
only from the order-detail answer, an answer to our own signed request whose
signature we verify too (docs: trust). Two IPNs with the same four signed fields
are one delivery (``identity``), whatever else their bodies say.

Dedup key: ``status:<STATUS>`` per order (docs/providers.md: AliX idempotency key is
``(externalOrderId, status)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import requests
from marshmallow import Schema, ValidationError, fields, validate

from orders.errors import BadEventPayload, InvalidPayload, SignatureInvalid
from orders.events import COVERS_ALL, Event, decimal_text, utcnow
from orders.providers.alixpay import signing
from orders.providers.alixpay.client import AlixPayClient, VerifiedOrder
from orders.providers.alixpay.settings import AlixPaySettings
from orders.providers.alixpay.statuses import STATUS_MAP
from orders.providers.payload import amount, load, order_hint, parse_json_object
from orders.providers.payload import creation_event as payload_creation_event

SLUG = "alixpay"
# Kept out of the record of our creation request: they stay with AliX.
PERSONAL_FIELDS = ("bankAccountNumber", "bankAccountName", "userEmail", "extendInfo")
COVERS: Mapping[str, tuple[str, ...]] = {
    "callback": ("provider_status", "kind", "fiat_amount"),
    "poll": COVERS_ALL,
    "create": COVERS_ALL,
}


class _Amount(fields.Field):
    """A JSON number (or a numeric string), kept as received for JS rendering."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValidationError("must be a number")
        try:
            decimal_text(signing.js_number(value))
        except (BadEventPayload, TypeError) as exc:
            raise ValidationError("must be a finite number") from exc
        return value


class IPNSchema(Schema):
    """The fields an AliX IPN must carry; others are allowed and kept in the raw body."""

    class Meta:
        unknown = "include"

    externalOrderId = fields.String(required=True, validate=validate.Length(min=1, max=128))
    type = fields.String(required=True, validate=validate.Length(max=64))
    fiatAmount = _Amount(required=True)
    status = fields.String(required=True, validate=validate.Length(min=1, max=64))


# Built once: a schema is stateless while loading, and building one per callback costs.
IPN_SCHEMA = IPNSchema()


class AlixPayAdapter:
    slug = SLUG
    status_map = STATUS_MAP
    callbacks_are_triggers = False  # the IPN signature covers the status
    covers = COVERS

    def __init__(self, settings: AlixPaySettings, session: requests.Session | None = None):
        self.settings = settings
        self.client = AlixPayClient(settings, session)

    def parse_callback(self, body: bytes, headers: Mapping[str, str], received_at: datetime) -> Event:
        data = parse_json_object(body)
        load(IPN_SCHEMA, data)
        signature = data.get("signature")
        if not isinstance(signature, str) or not signature:
            raise SignatureInvalid("missing signature")
        verified_by = self.client.verify(data)
        if verified_by is None:
            raise SignatureInvalid("signature does not verify with any configured AliX key")
        return self.event_from_order(data, body.decode("utf-8"), verified_by, "callback", received_at)

    def poll(
        self, external_order_id: str, *, kind: str | None = None, provider_order_id: str | None = None
    ) -> Event:
        fetched_at = utcnow()
        answer = self.client.order_details(external_order_id)
        return self.event_from_verified(answer, "poll", fetched_at)

    def validate_create(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return validate_create(request)

    def creation_event(self, request: Mapping[str, Any], received_at: datetime) -> Event:
        return creation_event(request, received_at)

    def submit_create(self, request: Mapping[str, Any]) -> Event:
        """Send a validated create request to AliX; its signed answer as a ``create`` event."""
        body = {k: v for k, v in request.items() if k != "kind" and v is not None}
        fetched_at = utcnow()
        if request.get("kind") == "cashout":
            answer = self.client.create_cashout(body)
        else:
            answer = self.client.create_sell_order(body)
        return self.event_from_verified(answer, "create", fetched_at)

    def order_hint(self, body: bytes) -> str | None:
        return order_hint(body, "externalOrderId")

    def event_from_verified(self, answer: VerifiedOrder, source: str, fetched_at: datetime) -> Event:
        return self.event_from_order(
            answer.body, answer.raw, answer.verified_by, source, utcnow(), fetched_at=fetched_at
        )

    @staticmethod
    def event_from_order(
        order: Mapping[str, Any],
        raw: str,
        verified_by: str,
        source: str,
        received_at: datetime,
        *,
        fetched_at: datetime | None = None,
    ) -> Event:
        status = order.get("status")
        if not isinstance(status, str) or not status:
            raise InvalidPayload("order has no status", ["status"])
        details: dict[str, Any] = {}
        crypto_amount = crypto_currency = None
        if source != "callback":
            token = order.get("tokenTransfer") or {}
            if isinstance(token, dict):
                details = {
                    "tx_hash": token.get("txHash"),
                    "wallet_address": token.get("walletAddress") or token.get("address"),
                    "network": token.get("network"),
                }
                crypto_amount = amount(token.get("amount"), "tokenTransfer.amount", strict=False)
                crypto_currency = token.get("currency") or None
            details.update(
                description=order.get("description") or order.get("descriptions"),
                expires_at=order.get("expiresAt"),
                provider_created_at=order.get("createdAt"),
                paid_amount=amount(order.get("paidAmount"), "paidAmount", strict=False),
            )
        return Event(
            provider=SLUG,
            external_order_id=str(order["externalOrderId"]),
            provider_status=status,
            source=source,
            dedup_key=f"status:{status}",
            raw_body=raw,
            received_at=received_at.isoformat(),
            verified_by=verified_by,
            kind=order.get("type") or None,
            fiat_amount=amount(order.get("fiatAmount"), "fiatAmount", strict=source == "callback"),
            crypto_amount=crypto_amount,
            crypto_currency=crypto_currency,
            details={k: v for k, v in details.items() if v not in (None, "")},
            covers=COVERS[source],
            fetched_at=fetched_at.isoformat() if fetched_at else None,
            # An IPN is the same delivery whenever its signed fields are the same.
            identity="|".join(signing.js_number(f) for f in signing.response_fields(dict(order)))
            if source == "callback"
            else None,
        )


class SellOrderSchema(Schema):
    """An off-ramp sell order as the partner asks for it (docs/providers.md 1.2)."""

    class Meta:
        unknown = "raise"

    kind = fields.String(load_default="sell", validate=validate.OneOf(["sell"]))
    externalOrderId = fields.String(required=True, validate=validate.Length(min=1, max=128))
    currency = fields.String(required=True, validate=validate.Length(min=1, max=32))
    amount = _Amount(load_default=None, allow_none=True)
    fiatAmount = _Amount(required=True)
    network = fields.String(required=True, validate=validate.Length(min=1, max=32))
    bankCode = fields.String(required=True, validate=validate.Length(min=1, max=64))
    bankAccountNumber = fields.String(required=True, validate=validate.Length(min=1, max=64))
    bankAccountName = fields.String(required=True, validate=validate.Length(min=1, max=128))
    paymentMethod = fields.String(load_default="bank")
    fiatCurrency = fields.String(load_default="VND", validate=validate.Length(min=1, max=16))
    refCode = fields.String(load_default=None, allow_none=True)
    requestKycFields = fields.Dict(load_default=dict)
    requestPaymentFields = fields.Dict(load_default=dict)


class CashoutSchema(Schema):
    """A remittance cash-out (VND only; docs/providers.md 1.2, seed S1)."""

    class Meta:
        unknown = "raise"

    kind = fields.String(required=True, validate=validate.OneOf(["cashout"]))
    externalOrderId = fields.String(required=True, validate=validate.Length(min=1, max=128))
    cryptoCurrency = fields.String(required=True, validate=validate.Length(min=1, max=32))
    userEmail = fields.Email(required=True)
    fiatAmount = _Amount(required=True)
    fiatCurrency = fields.String(load_default="VND", validate=validate.OneOf(["VND"]))
    extendInfo = fields.Dict(required=True)


def validate_create(request: Mapping[str, Any]) -> dict[str, Any]:
    """The validated create request; InvalidPayload names every bad field."""
    schema: Schema = CashoutSchema() if request.get("kind") == "cashout" else SellOrderSchema()
    return load(schema, request)


def creation_event(request: Mapping[str, Any], received_at: datetime) -> Event:
    """The record of our own creation request (no provider status yet)."""
    return payload_creation_event(
        SLUG,
        request,
        received_at,
        external_order_id=request["externalOrderId"],
        kind=request.get("kind", "sell"),
        personal=PERSONAL_FIELDS,
        fiat_amount=amount(request.get("fiatAmount"), "fiatAmount"),
        fiat_currency=request.get("fiatCurrency"),
        crypto_currency=request.get("currency") or request.get("cryptoCurrency"),
    )
