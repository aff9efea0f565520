"""Fuspay Axis in ``make run``: its sandbox wired to the stack, and one demo sell order.

The order reaches SUCCESS through its signed events (HMAC-SHA512 over the
partner keys, the default recipe); the payout is confirmed by
FetchTransferStatus before rampwatch believes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from devkit.fuspay.sandbox import FuspaySandbox
from devkit.stack import ProviderStack, Scenario, say

PARTNER_ID = "p000001"
PUBLIC_KEY = "pk_partner_dev"
SECRET_KEY = "sk_partner_dev"  # noqa: S105 - the local sandbox's, never a real one


def start(dev: Path, base: str, env: Mapping[str, str], stamp: str) -> ProviderStack:
    """Start the Fuspay sandbox posting events to ``base``; its settings and demo order."""
    callback = f"{base}/webhooks/fuspay"
    sandbox = FuspaySandbox(
        partner_id=PARTNER_ID, public_key=PUBLIC_KEY, secret_key=SECRET_KEY, callback_url=callback
    ).start()
    say(f"Fuspay sandbox at {sandbox.url}, posting events to {callback}")
    settings = {
        "FUSPAY_PARTNER_ID": PARTNER_ID,
        "FUSPAY_PUBLIC_KEY": PUBLIC_KEY,
        "FUSPAY_SECRET_KEY": SECRET_KEY,
        "FUSPAY_BASE_URL": sandbox.url,
        "FUSPAY_CALLBACK_URL": callback,
        "FUSPAY_POLL_BACKOFF": env.get("FUSPAY_POLL_BACKOFF", "2s,3s,5s,10s,30s"),
        "FUSPAY_TIMEOUT": "5",
    }
    order_id = f"fuspay-{stamp}"
    request = {
        "partner_order_id": order_id,
        "chain": "usdt-trc20",
        "crypto_amount": "100",
        "fiat_currency_to_receive": "NGN",
        "seller_phone": "+2348000000000",
        "seller_email": "seller@example.com",
        "first_name": "Ada",
        "last_name": "Obi",
        "account_name": "Ada Obi",
        "account_number": "0123456789",
        "account_code": "090405",
        "intrapay_merchant_id": "m-dev",
        "markup_fee": "1",
        "refund_wallet_address": "TXLYE1yx8LyXfTY1utnXEm7DtzWsgvYBWB",
    }
    steps = ["event.sell.received.crypto", "event.sell.credited.fiat"]
    scenario = Scenario("fuspay", order_id, request, steps, sandbox, note="signed events, HMAC-SHA512")
    return ProviderStack(sandbox, settings, [scenario])
