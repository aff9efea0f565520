"""What several test modules need to drive orders: a verified AliX callback event, a valid
creation request per provider and, on the whole stack, Changelly's callback-then-poll settling. Importable from any
test as ``scenarios`` (the tests folder is on sys.path)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from orders.events import COVERS_ALL, Event
from workers.queue import POLLS


def alixpay_callback(status: str, order: str = "o-1", body: str | None = None) -> Event:
    """A verified AliX IPN of ``order`` at ``status``, as the receiver queues it."""
    return Event(
        provider="alixpay",
        external_order_id=order,
        provider_status=status,
        source="callback",
        dedup_key=f"status:{status}",
        raw_body=body or f'{{"externalOrderId":"{order}","status":"{status}"}}',
        received_at=datetime.now(UTC).isoformat(),
        verified_by="ALIXPAY_PUBLIC_KEY+ALIXPAY_SECRET_KEY",
        fiat_amount="100000",
        covers=COVERS_ALL,
    )


def alixpay_sell(order_id: str, **extra: Any) -> dict[str, Any]:
    """An AliX off-ramp sell order as the partner asks for it."""
    return {
        "externalOrderId": order_id,
        "currency": "USDT",
        "network": "TRC20",
        "fiatAmount": 500000,
        "bankCode": "VCB",
        "bankAccountNumber": "0123456789",
        "bankAccountName": "NGUYEN VAN A",
        **extra,
    }


def fuspay_sell(order_id: str, **extra: Any) -> dict[str, Any]:
    """A Fuspay InitiateSellOrder request (``partner_callback_url`` from the settings unless given)."""
    return {
        "partner_order_id": order_id,
        "chain": "usdt-trc20",
        "crypto_amount": "25.5",
        "fiat_currency_to_receive": "NGN",
        "seller_phone": "+2348000000000",
        "seller_email": "seller@example.com",
        "first_name": "Avis",
        "last_name": "Charles",
        "account_name": "Avis Charles",
        "account_number": "0123456789",
        "account_code": "090405",
        "intrapay_merchant_id": "ipm-001",
        "markup_fee": "0.5",
        "refund_wallet_address": "0xrefund",
        **extra,
    }


def changelly_sell(order_id: str, **extra: Any) -> dict[str, Any]:
    """A Changelly ``POST /v1/sell/orders`` request."""
    return {
        "externalOrderId": order_id,
        "externalUserId": "user-1",
        "providerCode": "moonpay",
        "currencyFrom": "BTC",
        "currencyTo": "EUR",
        "amountFrom": "0.01",
        "country": "DE",
        **extra,
    }


def settle_changelly(stack: Any) -> None:
    """Deliver what the Changelly sandbox holds, apply it, then run the polls it
    triggered (including those deferred to the end of their window)."""
    stack.changelly.flush()
    assert stack.changelly.wait_idle(20)
    stack.drain()
    if ScheduledJobRegistry(POLLS, connection=stack.runtime.redis, serializer=JSONSerializer).count:
        time.sleep(1.2)  # CHANGELLY_CALLBACK_POLL_WINDOW is 1 s in the tests
    stack.drain()
