"""Changelly Fiat adapter: callbacks as triggers, ``GET /v1/orders`` as the truth, sell orders.

A callback's signature covers only ``{"orderId": ...}`` (doc bug C-1): the
status, the amounts and even ``externalOrderId`` in the body are unprotected
(so a callback Event never carries an externalOrderId: the worker resolves the
order by the signed ``orderId``),
and the signature is the same for every callback of the order (replayable). So
a callback becomes an Event with no provider status (``callbacks_are_triggers``)
that covers only ``provider_order_id``: it is recorded, its claimed status (when
it is one of Changelly's statuses) is kept as the event's ``claimed_status``,
shown in the timeline as a claim and never applied, and the worker polls the
order at once; the poll's answer is what gets applied. Callbacks with the same
``orderId`` and the same claim are one delivery (``identity``), so replaying the
signature with other bodies adds no rows (at most one per status per order).

A poll is ``GET /v1/orders?orderId=<id>`` when Changelly's order id is known,
else ``?externalOrderId=<ours>``. It reports the present, so a ``pending`` after
a ``hold`` is the order resuming. Dedup key: ``status:<status>`` per order
(docs/providers.md: Changelly's idempotency key is ``(orderId, status)``). A poll
Event's ``raw_body`` is that one order as received (compact JSON), not the page.

Kind: an order is a sell when it has a ``refundAddress`` key (sell orders carry
one, buy orders a ``walletAddress``) or its ``currencyFrom`` is not an ISO 4217
fiat code; otherwise the kind stays unknown (None) unless the caller knows it.
Amounts are read for sells only: crypto from ``amountFrom``/``currencyFrom``
(a string or a number, doc bug C-2), fiat from ``payoutAmount`` once the order
is ``complete`` and ``payoutCurrency`` (or ``currencyTo``). Personal data (IP, user agent,
wallet and refund addresses) stays in the raw body only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import requests
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from orders.errors import (
    BadEventPayload,
    InvalidPayload,
    ProviderRejected,
    ProviderResponseInvalid,
    SignatureInvalid,
)
from orders.events import COVERS_ALL, Event, decimal_text, utcnow
from orders.providers.changelly import signing
from orders.providers.changelly.client import MAX_LIMIT, ORDERS_PATH, SELL_ORDERS_PATH, ChangellyClient
from orders.providers.changelly.settings import ChangellySettings
from orders.providers.changelly.statuses import STATUS_MAP
from orders.providers.payload import amount, load, order_hint, parse_json_object
from orders.providers.payload import creation_event as payload_creation_event

SLUG = "changelly"
# Kept out of the record of our creation request: they stay with Changelly.
PERSONAL_FIELDS = ("ip", "userAgent", "refundAddress")
POLL_VERIFIED_BY = "CHANGELLY_API_KEY:request"
MAX_ID = 128
MAX_BACKFILL_PAGES = 1000
COVERS: Mapping[str, tuple[str, ...]] = {
    "callback": ("provider_order_id",),  # the signature covers {"orderId": ...} only
    "poll": COVERS_ALL,
    "create": COVERS_ALL,
}

log = logging.getLogger("rampwatch.providers.changelly")

# ISO 4217 codes in use (and the X-codes for metals and funds): a currencyFrom
# among them is fiat, so the order is a buy.
FIAT_CODES = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL
    BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP
    ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR
    IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL
    LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR
    NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD
    SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX
    USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL
    """.split()
)


class ChangellyAdapter:
    slug = SLUG
    status_map = STATUS_MAP
    callbacks_are_triggers = True  # the callback signature covers only orderId
    covers = COVERS

    def __init__(
        self,
        settings: ChangellySettings,
        session: requests.Session | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.settings = settings
        self.client = ChangellyClient(settings, session)
        self.clock = clock

    # -- callbacks

    def parse_callback(self, body: bytes, headers: Mapping[str, str], received_at: datetime) -> Event:
        signature = signing.header(headers, signing.CALLBACK_SIGNATURE_HEADER)
        if not signature or not signature.strip():
            raise SignatureInvalid(f"missing {signing.CALLBACK_SIGNATURE_HEADER}")
        data = parse_json_object(body)
        order_id = data.get("orderId")
        if not isinstance(order_id, str) or not order_id or len(order_id) > MAX_ID:
            raise InvalidPayload("orderId must be a non-empty string", ["orderId"])
        verified_by = signing.verify_callback(order_id, signature, self.settings.callback_public_keys)
        if verified_by is None:
            raise SignatureInvalid("signature does not verify with any configured Changelly callback key")
        claimed = data.get("status")
        claim = claimed if isinstance(claimed, str) and STATUS_MAP.lookup(claimed) is not None else None
        return Event(
            provider=SLUG,
            # externalOrderId is unsigned: a replayed signature for order A with
            # another externalOrderId must not file anything under that order. ""
            # makes the worker find our id by the signed orderId (store, or a poll).
            external_order_id="",
            provider_status=None,
            source="callback",
            dedup_key=f"callback:{hashlib.sha256(body).hexdigest()[:32]}",
            raw_body=body.decode("utf-8"),
            received_at=received_at.isoformat(),
            verified_by=verified_by,
            provider_order_id=order_id,
            covers=COVERS["callback"],
            claimed_status=claim,
            identity=json.dumps([order_id, claim]),
        )

    def order_hint(self, body: bytes) -> str | None:
        return order_hint(body, "externalOrderId")

    # -- polling

    def poll(
        self, external_order_id: str, *, kind: str | None = None, provider_order_id: str | None = None
    ) -> Event:
        if provider_order_id:
            field, wanted = "orderId", provider_order_id
        elif external_order_id:
            field, wanted = "externalOrderId", external_order_id
        else:
            raise ValueError("poll needs external_order_id or provider_order_id")
        fetched_at = self.clock()
        page = self.client.orders([(field, wanted)])
        what = f"changelly GET {ORDERS_PATH}?{field}="
        matching = [o for o in page.orders if o.get(field) == wanted]
        if not matching:
            if page.orders:
                raise ProviderResponseInvalid(f"{what}: answer is about another order")
            raise ProviderRejected(f"{what}: order not found", status=200, code="notFound")
        if len({json.dumps(o, sort_keys=True) for o in matching}) > 1:
            raise ProviderResponseInvalid(f"{what}: several orders match")
        order = matching[0]
        if external_order_id and order.get("externalOrderId") != external_order_id:
            # Our stored orderId names an order filed under another externalOrderId
            # (or Changelly swapped the ids, doc bug C-3): never apply it to ours.
            raise ProviderResponseInvalid(f"{what}: answer is about another order")
        return self.event_from_order(order, kind=kind, received_at=self.clock(), fetched_at=fetched_at)

    def backfill(
        self, since: datetime, until: datetime | None = None, page_size: int = MAX_LIMIT
    ) -> Iterator[Event]:
        """Every order created in ``[since, until]`` (until: now) as a poll Event, page by
        page (``startDate``/``endDate``, ``offset``/``limit``). Stops when ``offset``
        reaches ``total`` (object shape), on a short or empty page (array shape), or
        after ``MAX_BACKFILL_PAGES``. An order the answer does not identify is skipped
        and logged."""
        if since.tzinfo is None or (until is not None and until.tzinfo is None):
            raise ValueError("backfill needs timezone-aware datetimes")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must be 1..{MAX_LIMIT}")
        until = until or self.clock()
        dates = [("startDate", iso_utc(since)), ("endDate", iso_utc(until))]
        offset = 0
        for _ in range(MAX_BACKFILL_PAGES):
            fetched_at = self.clock()
            page = self.client.orders([*dates, ("offset", str(offset)), ("limit", str(page_size))])
            received_at = self.clock()
            for order in page.orders:
                try:
                    yield self.event_from_order(order, received_at=received_at, fetched_at=fetched_at)
                except ProviderResponseInvalid as exc:
                    log.warning("backfill: skipped an order: %s", exc)
            offset += len(page.orders)
            if not page.orders or (page.total is None and len(page.orders) < page_size):
                return
            if page.total is not None and offset >= page.total:
                return
        log.warning("backfill: stopped after %d pages", MAX_BACKFILL_PAGES)

    def event_from_order(
        self,
        order: Mapping[str, Any],
        *,
        kind: str | None = None,
        received_at: datetime | None = None,
        fetched_at: datetime | None = None,
    ) -> Event:
        """A ``poll`` Event from one order object of ``GET /v1/orders``."""
        status = order.get("status")
        external = order.get("externalOrderId")
        order_id = order.get("orderId")
        if not isinstance(status, str) or not status or len(status) > 64:
            raise ProviderResponseInvalid(f"changelly order {_safe(order_id)}: no status")
        if not _is_id(external) or not _is_id(order_id):
            raise ProviderResponseInvalid(f"changelly order {_safe(order_id)}: no orderId or externalOrderId")
        kind = kind or ("sell" if looks_like_sell(order) else None)
        amounts: dict[str, str | None] = {}
        if kind == "sell":
            fiat_currency = order.get("payoutCurrency") or order.get("currencyTo")
            amounts = {
                "crypto_amount": amount(order.get("amountFrom"), "amountFrom", strict=False),
                "crypto_currency": _text(order.get("currencyFrom")),
                # The payout is final only once complete (a quote may move before):
                # an earlier figure would raise false amount_mismatch anomalies.
                "fiat_amount": amount(order.get("payoutAmount"), "payoutAmount", strict=False)
                if status == "complete"
                else None,
                "fiat_currency": _text(fiat_currency),
            }
        details = {
            "tx_hash": _text(order.get("transactionHash")),
            "redirect_url": _text(order.get("redirectUrl")),
            "provider_created_at": _text(order.get("createdAt")),
        }
        return Event(
            provider=SLUG,
            external_order_id=external,
            provider_status=status,
            source="poll",
            dedup_key=f"status:{status}",
            raw_body=json.dumps(order, separators=(",", ":"), ensure_ascii=False),
            received_at=(received_at or self.clock()).isoformat(),
            verified_by=POLL_VERIFIED_BY,
            provider_order_id=order_id,
            kind=kind,
            details={k: v for k, v in details.items() if v is not None},
            covers=COVERS["poll"],
            fetched_at=(fetched_at or received_at or self.clock()).isoformat(),
            **amounts,
        )

    # -- creation

    def validate_create(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return validate_create(request)

    def creation_event(self, request: Mapping[str, Any], received_at: datetime) -> Event:
        return creation_event(request, received_at)

    def submit_create(self, request: Mapping[str, Any]) -> Event:
        """``POST /v1/sell/orders`` with a validated request; the answer's ``orderId`` and
        ``redirectUrl`` as a ``create`` Event (no status: the order is ``created``
        at Changelly, and the first poll says so)."""
        body = {k: v for k, v in request.items() if k != "kind" and v is not None}
        fetched_at = self.clock()
        answer = self.client.create_sell_order(body)
        data = answer.data
        what = f"changelly POST {SELL_ORDERS_PATH}"
        if data.get("externalOrderId") != body["externalOrderId"]:
            # Doc bug C-3: a sample swaps externalOrderId and externalUserId.
            raise ProviderResponseInvalid(f"{what}: answer does not echo our externalOrderId")
        if "externalUserId" in data and data.get("externalUserId") != body["externalUserId"]:
            raise ProviderResponseInvalid(f"{what}: answer does not echo our externalUserId")
        order_id = data.get("orderId")
        if not _is_id(order_id):
            raise ProviderResponseInvalid(f"{what}: answer has no orderId")
        redirect = data.get("redirectUrl")
        details = {"redirect_url": redirect} if isinstance(redirect, str) and redirect else {}
        created_at = data.get("createdAt")
        if isinstance(created_at, str) and created_at:
            details["provider_created_at"] = created_at
        return Event(
            provider=SLUG,
            external_order_id=body["externalOrderId"],
            provider_status=None,
            source="create",
            dedup_key="create:answer",
            raw_body=answer.raw,
            received_at=self.clock().isoformat(),
            verified_by=POLL_VERIFIED_BY,
            provider_order_id=order_id,
            kind="sell",
            details=details,
            covers=COVERS["create"],
            fetched_at=fetched_at.isoformat(),
        )


# -- creation requests


class _Amount(fields.Field):
    """A positive amount given as a string or a number (doc bug C-2); loaded as a decimal string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValidationError("must be a number or a numeric string")
        try:
            text = decimal_text(value.strip() if isinstance(value, str) else value)
        except BadEventPayload as exc:
            raise ValidationError("must be a finite number") from exc
        if text is None or Decimal(text) <= 0:
            raise ValidationError("must be greater than 0")
        return text


def _ip_address(value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError as exc:
        raise ValidationError("not an IP address") from exc


_TICKER = validate.Regexp(r"^[A-Z0-9][A-Z0-9_-]{0,31}$", error="an upper-case ticker")


class SellOrderSchema(Schema):
    """``POST /v1/sell/orders`` as the partner asks for it (seed S3; docs/providers.md 3.2).

    ``refundAddress`` is optional (doc bug C-4); ``state`` is required for the US.
    ``kind`` ("sell", the only kind) is accepted for symmetry with other providers
    and not sent."""

    class Meta:
        unknown = "raise"

    kind = fields.String(validate=validate.OneOf(["sell"]))
    externalOrderId = fields.String(required=True, validate=validate.Length(min=1, max=MAX_ID))
    externalUserId = fields.String(required=True, validate=validate.Length(min=1, max=MAX_ID))
    providerCode = fields.String(required=True, validate=validate.Length(min=1, max=64))
    currencyFrom = fields.String(required=True, validate=_TICKER)
    currencyTo = fields.String(required=True, validate=_TICKER)
    amountFrom = _Amount(required=True)
    country = fields.String(
        required=True, validate=validate.Regexp(r"^[A-Z]{2}$", error="ISO 3166-1 alpha-2")
    )
    state = fields.String(allow_none=True, validate=validate.Length(min=1, max=16))
    ip = fields.String(allow_none=True, validate=_ip_address)
    refundAddress = fields.String(allow_none=True, validate=validate.Length(min=1, max=256))
    paymentMethod = fields.String(allow_none=True, validate=validate.Length(min=1, max=64))
    userAgent = fields.String(allow_none=True, validate=validate.Length(min=1, max=1024))
    metadata = fields.Dict(allow_none=True)

    @validates_schema
    def _us_needs_state(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("country") == "US" and not data.get("state"):
            raise ValidationError("required when country is US", "state")


def validate_create(request: Mapping[str, Any]) -> dict[str, Any]:
    """The validated sell order (``amountFrom`` as a decimal string, optional fields
    only when given); InvalidPayload names every bad field, sorted."""
    return load(SellOrderSchema(), request)


def creation_event(request: Mapping[str, Any], received_at: datetime) -> Event:
    """The record of our own creation request (no provider status yet)."""
    return payload_creation_event(
        SLUG,
        request,
        received_at,
        external_order_id=request["externalOrderId"],
        kind="sell",
        personal=PERSONAL_FIELDS,
        crypto_amount=amount(request.get("amountFrom"), "amountFrom"),
        crypto_currency=request.get("currencyFrom"),
        fiat_currency=request.get("currencyTo"),
    )


# -- helpers


def looks_like_sell(order: Mapping[str, Any]) -> bool:
    """A sell has a ``refundAddress`` key, or pays in something that is not fiat."""
    if "refundAddress" in order:
        return True
    currency_from = order.get("currencyFrom")
    return isinstance(currency_from, str) and bool(currency_from) and currency_from.upper() not in FIAT_CODES


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``, as Changelly writes ``createdAt``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _safe(value: Any) -> str:
    return value if _is_id(value) else "?"
