"""The AliX sandbox's orders: statuses, what a request must carry, how an order is built and moves.

An order is the object AliX serves (answers and IPNs): ``externalOrderId``,
``type``, ``fiatAmount``, ``status`` (the signed fields) and the token and bank
transfer details around them, in AliX's field order, with its ISO timestamps
and a deterministic wallet, memo and tx hash per order id. This module owns that
shape, the status table and descriptions, the fields each partner request must
carry and the ones its signature covers (docs/providers.md 1.2), as plain data and
pure functions the sandbox holds under its lock.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from devkit.kit import finite_number

STATUSES = (
    "AWAITING_PAYMENT",
    "PAYMENT_COMPLETED",
    "PROCESSING_TOKEN_TRANSFER",
    "SUCCESS",
    "FAIL",
    "ERROR",
)
INITIAL_STATUS = "AWAITING_PAYMENT"
ORDER_TYPES = ("sell", "cashout")
CASHOUT_MIN_FIAT = 50_000  # "VND 10000 (Sandbox: 50000)" (S1)
PRICE_PER_TOKEN = 25_000  # fiat per token; a fixed fake rate
ORDER_TTL = timedelta(minutes=30)
MAX_ORDER_ID = 128

# The request strings AliX verifies, as documented (field names; dotted = nested).
SELL_SIGNED = ("partnerCode", "externalOrderId", "currency", "amount", "network", "paymentMethod", "bankCode")
CASHOUT_SIGNED = (
    "partnerCode",
    "externalOrderId",
    "cryptoCurrency",
    "fiatAmount",
    "extendInfo.recipientBankCode",
    "extendInfo.recipientNumber",
    "extendInfo.transferContent",
    "userEmail",
)
DETAILS_SIGNED = ("partnerCode", "externalOrderId")

SELL_REQUIRED = (
    "partnerCode",
    "externalOrderId",
    "currency",
    "fiatAmount",
    "network",
    "bankCode",
    "bankAccountNumber",
    "bankAccountName",
    "webhookSecretKey",
    "signature",
)
CASHOUT_REQUIRED = (
    "partnerCode",
    "externalOrderId",
    "cryptoCurrency",
    "fiatAmount",
    "userEmail",
    "webhookSecretKey",
    "signature",
)
DETAILS_REQUIRED = ("partnerCode", "externalOrderId", "signature")
NUMERIC_FIELDS = frozenset({"fiatAmount"})

DESCRIPTIONS = {
    "AWAITING_PAYMENT": "Order created, awaiting payment",
    "PAYMENT_COMPLETED": "Payment completed",
    "PROCESSING_TOKEN_TRANSFER": "Processing token transfer",
    "SUCCESS": "Transaction completed",
    "FAIL": "Transaction failed",
    "ERROR": "Transaction error",
}


def positive_number(value: Any) -> bool:
    return finite_number(value) and value > 0


def present(value: Any, numeric: bool = False) -> bool:
    if numeric:
        return finite_number(value)
    return isinstance(value, str) and value.strip() != ""


def valid_order_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ORDER_ID and value.strip() == value


def text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def dig(body: dict[str, Any], dotted: str) -> Any:
    value: Any = body
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def js_time(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_order(
    external_order_id: str,
    type_: str,
    fiat_amount: float,
    *,
    currency: str = "USDT",
    network: str = "TRC20",
    amount: float | None = None,
    bank_name: str = "",
    bank_account_name: str = "",
    bank_account_number: str = "",
    content: str = "",
) -> dict[str, Any]:
    now = datetime.now(UTC)
    digest = hashlib.sha256(external_order_id.encode("utf-8")).hexdigest()
    token_amount = amount if amount is not None else round(fiat_amount / PRICE_PER_TOKEN, 6)
    return {
        "externalOrderId": external_order_id,
        "type": type_,
        "fiatAmount": fiat_amount,
        "paidAmount": 0,
        "tokenTransfer": {
            "currency": currency,
            "network": network,
            "price": PRICE_PER_TOKEN,
            "amount": token_amount,
            "walletAddress": "TSandbox" + digest[:26],
            "txHash": "",
        },
        "bankTransfer": {
            "bankAccountName": bank_account_name,
            "bankAccountNumber": bank_account_number,
            "bankName": bank_name,
            "contentPayment": content or f"ALIX {digest[:10].upper()}",
            "totalPayment": fiat_amount,
            "qrUrl": "",
        },
        "fees": {"systemFee": 0, "processingFee": 0},
        "status": INITIAL_STATUS,
        "description": DESCRIPTIONS[INITIAL_STATUS],
        "createdAt": js_time(now),
        "expiresAt": js_time(now + ORDER_TTL),
    }


def apply_status(order: dict[str, Any], status: str) -> None:
    order["status"] = status
    order["description"] = DESCRIPTIONS[status]
    if status in ("PAYMENT_COMPLETED", "PROCESSING_TOKEN_TRANSFER", "SUCCESS"):
        order["paidAmount"] = order["fiatAmount"]
    if status in ("PROCESSING_TOKEN_TRANSFER", "SUCCESS") and not order["tokenTransfer"].get("txHash"):
        seed = f"{order['externalOrderId']}|tx".encode()
        order["tokenTransfer"]["txHash"] = "0x" + hashlib.sha256(seed).hexdigest()
