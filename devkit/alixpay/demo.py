"""AliX Pay in ``make run``: its sandbox wired to the stack, and two demo orders.

One order reaches SUCCESS through its IPNs; the other's IPNs are all dropped,
so only the reconciler's polls of the signed order-detail API can finish it.
Our key pair and the sandbox's are kept under ``var/dev/`` across runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devkit.alixpay.sandbox import AlixSandbox
from devkit.stack import ProviderStack, Scenario, keypair, say

PARTNER_CODE = "rampwatch-dev"
SECRET = "dev-partner-secret"  # noqa: S105 - the local sandbox's, never a real one
WEBHOOK_SECRET = "dev-webhook-secret"  # noqa: S105 - likewise
STEPS = ["PAYMENT_COMPLETED", "PROCESSING_TOKEN_TRANSFER", "SUCCESS"]


def sell_request(order_id: str) -> dict[str, Any]:
    return {
        "externalOrderId": order_id,
        "currency": "USDT",
        "network": "TRC20",
        "fiatAmount": 2500000,
        "bankCode": "VCB",
        "bankAccountNumber": "0123456789",
        "bankAccountName": "NGUYEN VAN A",
    }


def start(dev: Path, base: str, env: Mapping[str, str], stamp: str) -> ProviderStack:
    """Start the AliX sandbox posting IPNs to ``base``; its settings and demo orders."""
    our_key, ours, _ = keypair(dev, "alixpay_partner")
    their_key, _, theirs_public = keypair(dev, "alixpay_sandbox")
    sandbox = AlixSandbox(
        partner_code=PARTNER_CODE,
        secret_key=SECRET,
        webhook_secret_key=WEBHOOK_SECRET,
        partner_public_key=our_key.public_key(),
        alix_private_key=their_key,
        callback_url=f"{base}/webhooks/alixpay",
    ).start()
    say(f"AliX sandbox at {sandbox.url}, posting IPNs to {base}/webhooks/alixpay")
    settings = {
        "ALIXPAY_PARTNER_CODE": PARTNER_CODE,
        "ALIXPAY_SECRET_KEY": SECRET,
        "ALIXPAY_WEBHOOK_SECRET_KEY": WEBHOOK_SECRET,
        "ALIXPAY_PRIVATE_KEY": str(ours),
        "ALIXPAY_PUBLIC_KEY": str(theirs_public),
        "ALIXPAY_BASE_URL": sandbox.url,
        "ALIXPAY_POLL_BACKOFF": env.get("ALIXPAY_POLL_BACKOFF", "2s,3s,5s,10s,30s"),
        "ALIXPAY_TIMEOUT": "5",
    }
    ipn, dropped = f"alix-{stamp}-ipn", f"alix-{stamp}-dropped"
    scenarios = [
        Scenario("alixpay", ipn, sell_request(ipn), STEPS, sandbox),
        Scenario(
            "alixpay",
            dropped,
            sell_request(dropped),
            STEPS,
            sandbox,
            drop_callbacks=True,
            note="all its IPNs will be dropped: only the reconciler can finish it",
        ),
    ]
    return ProviderStack(sandbox, settings, scenarios)
