"""Changelly Fiat settings: which variables configure the provider, read by ``config``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from config import IPNetwork, Named, PollPolicy, poll_setting, setting, stuck_times


@dataclass(frozen=True)
class ChangellySettings:
    prefix: ClassVar[str] = "CHANGELLY_"
    label: ClassVar[str] = "Changelly Fiat"

    api_key: str = setting(
        "API_KEY", required=True, secret=True, description="public API key, sent as X-Api-Key"
    )
    private_key: Named[RSAPrivateKey] = setting(
        "PRIVATE_KEY", "private_key", required=True, description="our RSA private key: signs requests"
    )
    callback_public_keys: tuple[Named[RSAPublicKey], ...] = setting(
        "CALLBACK_PUBLIC_KEY",
        "public_key",
        required=True,
        rotation=True,
        description="Changelly's callback public key: verifies X-Callback-Signature",
    )
    base_url: str = setting("BASE_URL", "url", required=True, description="https://fiat-api.changelly.com")
    # Changelly: "created" waits for the user's KYC and payment details and ends
    # "expired" when they are not given in time; "pending" covers several stages of the
    # provider behind it; "hold" is the provider's risk check.
    poll: PollPolicy = poll_setting(
        PollPolicy(stuck_after=stuck_times(AWAITING_PAYMENT=3 * 3600, PROCESSING=6 * 3600, ON_HOLD=48 * 3600))
    )
    timeout: float = setting(
        "TIMEOUT", "number", minimum=0.1, default=10.0, description="seconds, every Changelly call"
    )
    # Optional: only these client addresses may post callbacks (the address is the
    # peer's, or X-Forwarded-For's through RAMPWATCH_TRUSTED_PROXIES proxies).
    allowed_ips: tuple[IPNetwork, ...] = setting(
        "ALLOWED_IPS",
        "cidrs",
        default=(),
        description="IP addresses or CIDR networks allowed to post Changelly callbacks; unset: any",
    )
    # A callback only triggers a poll; at most one such poll per order per window.
    callback_poll_window: int = setting(
        "CALLBACK_POLL_WINDOW",
        "duration",
        default=10,
        description="at most one callback-triggered poll per order per window",
    )
