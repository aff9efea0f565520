"""Changelly in ``make run``: its sandbox wired to the stack, and one demo sell order.

Changelly signs only ``{"orderId"}`` in a callback, so each callback is a
trigger: the order reaches SUCCESS through the signed polls the callbacks cause.
Our key pair and the sandbox's callback key are kept under ``var/dev/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from devkit.changelly.sandbox import ChangellySandbox
from devkit.stack import ProviderStack, Scenario, keypair, say

API_KEY = "dev-changelly-api-key"


def start(dev: Path, base: str, env: Mapping[str, str], stamp: str) -> ProviderStack:
    """Start the Changelly sandbox posting callbacks to ``base``; its settings and demo order."""
    our_key, ours, _ = keypair(dev, "changelly_partner")
    their_key, _, theirs_public = keypair(dev, "changelly_sandbox_callback")
    sandbox = ChangellySandbox(
        api_key=API_KEY,
        partner_public_key=our_key.public_key(),
        callback_private_key=their_key,
        callback_url=f"{base}/webhooks/changelly",
    ).start()
    say(f"Changelly sandbox at {sandbox.url}, posting callbacks to {base}/webhooks/changelly")
    settings = {
        "CHANGELLY_API_KEY": API_KEY,
        "CHANGELLY_PRIVATE_KEY": str(ours),
        "CHANGELLY_CALLBACK_PUBLIC_KEY": str(theirs_public),
        "CHANGELLY_BASE_URL": sandbox.url,
        "CHANGELLY_CALLBACK_POLL_WINDOW": "2",
        "CHANGELLY_POLL_BACKOFF": env.get("CHANGELLY_POLL_BACKOFF", "2s,3s,5s,10s,30s"),
        "CHANGELLY_TIMEOUT": "5",
    }
    order_id = f"changelly-{stamp}"
    request = {
        "externalOrderId": order_id,
        "externalUserId": "demo-user",
        "providerCode": "moonpay",
        "currencyFrom": "BTC",
        "currencyTo": "EUR",
        "amountFrom": "0.01",
        "country": "DE",
    }
    scenario = Scenario(
        "changelly",
        order_id,
        request,
        ["pending", "complete"],
        sandbox,
        note="its callbacks only trigger polls: the polls' answers are applied",
    )
    return ProviderStack(sandbox, settings, [scenario])
