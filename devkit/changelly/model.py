"""The Changelly sandbox's orders: statuses, what a sell order must carry, how one is built and moves.

An order is what ``GET /v1/orders`` serves and callbacks carry, in the
documented field order, with amounts as strings (as the callback sample has
them, doc bug C-2), a fake payout at fixed rates less a fee, and a
deterministic tx hash. This module owns that shape, the sell-order checks
(``check_sell``: Changelly's error types ``validation``, ``state``,
``currency``, ``limits``) and the time and number forms Node writes; the
sandbox holds orders under its lock.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

STATUSES = ("created", "pending", "hold", "complete", "failed", "refunded", "expired")
INITIAL_STATUS = "created"
MAX_ID = 128
MIN_AMOUNT = Decimal("0.0001")
MAX_AMOUNT = Decimal("1000000")
# Fixed fake rates (fiat per unit of crypto) and fee for payoutAmount.
RATES = {"BTC": Decimal("60000"), "ETH": Decimal("3000"), "USDT": Decimal("1"), "USDC": Decimal("1")}
FEE = Decimal("0.02")

SELL_REQUIRED = (
    "externalOrderId",
    "externalUserId",
    "providerCode",
    "currencyFrom",
    "currencyTo",
    "amountFrom",
    "country",
)
SELL_OPTIONAL = ("state", "ip", "refundAddress", "paymentMethod", "userAgent", "metadata")


def decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def check_sell(body: Mapping[str, Any]) -> tuple[str, str, tuple[str, str] | None] | None:
    """(errorType, message, (cause, value) or None) for a refused sell order, or None."""
    missing = [
        n
        for n in SELL_REQUIRED
        if n != "amountFrom" and (not isinstance(body.get(n), str) or not body.get(n))
    ]
    if missing:
        return "validation", f"Missing or invalid: {', '.join(missing)}", (missing[0], "required")
    unknown = sorted(set(body) - set(SELL_REQUIRED) - set(SELL_OPTIONAL))
    if unknown:
        return (
            "validation",
            f"Unknown fields: {', '.join(u[:64] for u in unknown[:5])}",
            (unknown[0][:64], "unknown"),
        )
    for name in SELL_OPTIONAL:
        value = body.get(name)
        if value is not None and not isinstance(value, dict if name == "metadata" else str):
            return "validation", f"Invalid {name}", (name, "invalid")
    if len(body["externalOrderId"]) > MAX_ID or len(body["externalUserId"]) > MAX_ID:
        return "validation", "Id too long", ("externalOrderId", str(MAX_ID))
    if not re.fullmatch(r"[A-Z]{2}", body["country"]):
        return "validation", "Invalid country", ("country", "ISO 3166-1 alpha-2")
    if body["country"] == "US" and not body.get("state"):
        return "state", "State is required for the US", None
    ip = body.get("ip")
    if ip is not None:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return "validation", "Invalid ip", ("ip", "invalid")
    for name in ("currencyFrom", "currencyTo"):
        if not re.fullmatch(r"[A-Z0-9][A-Z0-9_-]{0,31}", body[name]):
            return "currency", f"Invalid {name}", (name, "invalid")
    amount = decimal(body.get("amountFrom"))
    if amount is None:
        return "validation", "Invalid amountFrom", ("amountFrom", "invalid")
    if amount < MIN_AMOUNT:
        return "limits", "Limits error", ("min", format(MIN_AMOUNT, "f"))
    if amount > MAX_AMOUNT:
        return "limits", "Limits error", ("max", format(MAX_AMOUNT, "f"))
    return None


def js_number(text: str) -> int | float:
    """A decimal string as a JSON number, integral ones without ``.0`` (as Node writes them)."""
    d = Decimal(text)
    return int(d) if d == d.to_integral_value() else float(d)


def js_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def new_order(request: Mapping[str, Any], created_at: datetime) -> dict[str, Any]:
    order_id = str(uuid.uuid4())
    amount = decimal(request["amountFrom"])
    assert amount is not None
    currency_from, currency_to = request["currencyFrom"], request["currencyTo"]
    return {
        "redirectUrl": f"https://fiat-sandbox.invalid/public/f2c/redirect/transactions/{order_id}/provider",
        "orderId": order_id,
        "status": INITIAL_STATUS,
        "externalUserId": request["externalUserId"],
        "externalOrderId": request["externalOrderId"],
        "providerCode": request["providerCode"],
        "currencyFrom": currency_from,
        "currencyTo": currency_to,
        # As a string, as the callback sample has it (doc bug C-2).
        "amountFrom": format(amount.normalize(), "f"),
        "country": request["country"],
        "state": request.get("state"),
        "ip": request.get("ip"),
        "refundAddress": request.get("refundAddress"),
        "paymentMethod": request.get("paymentMethod"),
        "userAgent": request.get("userAgent"),
        "metadata": request.get("metadata"),
        "createdAt": js_time(created_at),
        "payinAmount": format(amount.normalize(), "f"),
        "payoutAmount": "0",
        "payinCurrency": currency_from,
        "payoutCurrency": currency_to,
        "transactionHash": None,
    }


def apply_status(order: dict[str, Any], status: str) -> None:
    order["status"] = status
    if status in ("pending", "hold", "complete") and order["payoutAmount"] == "0":
        rate = RATES.get(order["currencyFrom"], Decimal("1"))
        payout = (Decimal(order["amountFrom"]) * rate * (1 - FEE)).quantize(Decimal("0.01"), ROUND_DOWN)
        order["payoutAmount"] = format(payout, "f")
    if status in ("pending", "hold", "complete") and order["transactionHash"] is None:
        order["transactionHash"] = hashlib.sha256(f"{order['orderId']}|tx".encode()).hexdigest()
