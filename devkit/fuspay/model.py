"""The Fuspay sandbox's orders: events, their effects, and the event bodies Fuspay posts.

An order is the body of its present event: the fields of the seed samples
(docs/providers.md 2.3; the buy body is built from the reference, as no sample
exists), in their order, so the signature is made over what Fuspay would send.
Each event moves the payment sub-statuses and the payout as Fuspay would
(``EFFECTS``); a KYC hold and a refund add their fields. This module owns that
data and the pure functions that build and move an order; the sandbox holds
orders under its lock and signs them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from devkit.kit import finite_number

SELL_EVENTS = (
    "event.sell.init",
    "event.sell.received.crypto",
    "event.sell.received.fiat_kyc_error",
    "event.sell.credited.fiat",
    "event.sell.error",
    "sell.event.close",
)
BUY_EVENTS = ("event.buy.init", "event.buy.received.fiat", "event.buy.credited.crypto", "event.buy.error")
EVENTS = {"sell": SELL_EVENTS, "buy": BUY_EVENTS}
GETORDER_SHAPES = ("event", "statuses")

# event -> (fiat_payment_status, crypto_payment_status, payout status); None keeps the value.
EFFECTS: Mapping[str, tuple[str | None, str | None, str | None]] = {
    "event.sell.init": ("PENDING", "PENDING", None),
    "event.sell.received.crypto": ("STARTED", "PAID", "PENDING"),
    "event.sell.received.fiat_kyc_error": ("STARTED", "PAID", "PENDING"),
    "event.sell.credited.fiat": ("PAID", "PAID", "SUCCESSFUL"),
    "event.sell.error": ("CANCELED", None, "FAILED"),
    "sell.event.close": ("CANCELED", None, "FAILED"),
    "event.buy.init": ("PENDING", "PENDING", None),
    "event.buy.received.fiat": ("PAID", "STARTED", None),
    "event.buy.credited.crypto": ("PAID", "COMPLETED", None),
    "event.buy.error": ("CANCELED", "CANCELED", None),
}
KYC_FIELDS = ("default_kyc_url", "message", "kyc_error_type")
PAYOUT_MESSAGES = {
    "PENDING": "Transfer pending",
    "SUCCESSFUL": "Transfer completed. No action needed",
    "FAILED": "Transfer failed",
}
CREATE_FIELDS = (
    "partner_order_id",
    "chain",
    "crypto_amount",
    "fiat_currency_to_receive",
    "partner_callback_url",
    "seller_phone",
    "seller_email",
    "first_name",
    "last_name",
    "account_name",
    "account_number",
    "account_code",
    "intrapay_merchant_id",
    "markup_fee",
    "refund_wallet_address",
)
SELL_RATE = 1500  # fiat per token, fixed fake rates
BUY_RATE = 1520
MAX_ORDER_ID = 128


def tidy(value: Decimal) -> float | int:
    """A JSON number as Fuspay's samples show them: integral values without a fraction."""
    value = value.quantize(Decimal("0.01")).normalize()
    return int(value) if value == value.to_integral_value() else float(value)


def number(value: Any, name: str) -> float | int:
    """A positive amount from a number or a decimal string."""
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation as exc:
            raise ValueError(f"{name} must be a positive number") from exc
        if not parsed.is_finite() or parsed <= 0:
            raise ValueError(f"{name} must be a positive number")
        return int(parsed) if parsed == parsed.to_integral_value() else float(parsed)
    if not finite_number(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number")
    return value


def digest(order_id: str, purpose: str) -> str:
    return hashlib.sha256(f"{order_id}|{purpose}".encode()).hexdigest()


def masked(number: str) -> str:
    return number[:2] + "*" * max(len(number) - 5, 0) + number[-3:] if len(number) > 5 else "*" * len(number)


def sell_body(
    order_id: str,
    ref: str,
    crypto: float,
    fiat: float,
    rate: int,
    chain: str,
    fiat_currency: str,
    request: Mapping[str, Any],
) -> dict[str, Any]:
    """A sell event body in the field order of the seed samples (S4)."""
    token = chain.split("-", 1)[0].upper()
    return {
        "event_name": "event.sell.init",
        "partner_order_id": order_id,
        "fuspay_order_ref": ref,
        "fiat_amount_to_receive": fiat,
        "crypto_amount_to_sell": crypto,
        "exchange_rate": rate,
        "pair": f"{token}/{fiat_currency}",
        "fiat_currency": fiat_currency,
        "pay_to_crypto_address": "T" + digest(order_id, "address")[:33],
        "chain": chain,
        "fiat_payment_status": "PENDING",
        "crypto_payment_status": "PENDING",
        "seller_fiat_account": {
            "account_name": request.get("account_name", ""),
            "account_number": request.get("account_number", ""),
            "account_code": request.get("account_code", ""),
        },
        "seller_crypto_txn_hash": None,
        "partner_callback_url": "",
        "transactional_kyc": {
            "email": request.get("seller_email", ""),
            "phone": request.get("seller_phone", ""),
            "first_name": request.get("first_name", ""),
            "last_name": request.get("last_name", ""),
        },
    }


def buy_body(
    order_id: str,
    ref: str,
    crypto: float,
    fiat: float,
    rate: int,
    chain: str,
    fiat_currency: str,
    request: Mapping[str, Any],
) -> dict[str, Any]:
    """A buy event body, constructed from the buy "Event Body Description" (no sample exists)."""
    token = chain.split("-", 1)[0].upper()
    return {
        "event_name": "event.buy.init",
        "partner_order_id": order_id,
        "fuspay_order_ref": ref,
        "fiat_amount_to_pay": fiat,
        "crypto_amount_to_receive": crypto,
        "exchange_rate": rate,
        "pair": f"{fiat_currency}/{token}",
        "fiat_currency": fiat_currency,
        "buyer_crypto_address": "T" + digest(order_id, "buyer")[:33],
        "chain": chain,
        "fiat_payment_status": "PENDING",
        "crypto_payment_status": "PENDING",
        "payer_into_account": {
            "account_name": "FUSPAY SANDBOX COLLECTIONS",
            "account_number": "90" + str(int(digest(order_id, "account")[:8], 16))[:8],
            "bank_name": "Sandbox Bank",
        },
        "payment_link": None,
        "crypto_txn_hash": None,
        "partner_callback_url": "",
        "transactional_kyc": {"email": "", "phone": "", "first_name": "", "last_name": ""},
    }


def apply_event(order: dict[str, Any], private: dict[str, Any], event_name: str) -> None:
    fiat, crypto, payout = EFFECTS[event_name]
    order["event_name"] = event_name
    if fiat is not None:
        order["fiat_payment_status"] = fiat
    if crypto is not None:
        order["crypto_payment_status"] = crypto
    elif order["crypto_payment_status"] != "PAID":  # an error before the crypto arrived
        order["crypto_payment_status"] = "CANCELED"
    if payout is not None or event_name.endswith(".init"):
        private["payout_status"] = payout
    oid = order["partner_order_id"]
    if private["kind"] == "sell" and order["crypto_payment_status"] == "PAID":
        order["seller_crypto_txn_hash"] = order["seller_crypto_txn_hash"] or digest(oid, "txn")
    if event_name == "event.buy.credited.crypto":
        order["crypto_txn_hash"] = order["crypto_txn_hash"] or digest(oid, "txn")
    for key in (*KYC_FIELDS, "meta_data"):
        order.pop(key, None)
    if event_name == "event.sell.received.fiat_kyc_error":
        order["default_kyc_url"] = "https://kyc.fuspay.finance"
        order["message"] = "Seller needs to perform KYC"
        order["kyc_error_type"] = "NO_KYC"
    if event_name == "sell.event.close":
        order["meta_data"] = {
            "status": "refunded",
            "message": "seller has been refunded",
            "refund_account": private["refund_wallet_address"],
            "amount_refunded": str(order["crypto_amount_to_sell"]),
            "fee": 0,
        }
