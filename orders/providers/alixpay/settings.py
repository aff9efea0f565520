"""AliX Pay settings: which variables configure the provider, read by ``config``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from config import IPNetwork, Named, PollPolicy, poll_setting, setting, stuck_times


@dataclass(frozen=True)
class AlixPaySettings:
    prefix: ClassVar[str] = "ALIXPAY_"
    label: ClassVar[str] = "AliX Pay"

    partner_code: str = setting("PARTNER_CODE", required=True, description="AliX partner code")
    # Ends every string we sign; one candidate for the IPN/response string (doc bug A-3).
    secret_keys: tuple[Named[str], ...] = setting(
        "SECRET_KEY",
        required=True,
        secret=True,
        rotation=True,
        description="partner API secret: ends every string we sign; a candidate for the IPN string",
    )
    # The other candidate for the IPN/response string, and sent as webhookSecretKey.
    webhook_secret_keys: tuple[Named[str], ...] = setting(
        "WEBHOOK_SECRET_KEY",
        required=True,
        secret=True,
        rotation=True,
        description="sent as webhookSecretKey on creation; the other candidate for the IPN string",
    )
    private_key: Named[RSAPrivateKey] = setting(
        "PRIVATE_KEY", "private_key", required=True, description="our RSA private key: signs requests"
    )
    public_keys: tuple[Named[RSAPublicKey], ...] = setting(
        "PUBLIC_KEY",
        "public_key",
        required=True,
        rotation=True,
        description="AliX's RSA public key: verifies IPNs and answers",
    )
    base_url: str = setting("BASE_URL", "url", required=True, description="e.g. https://sandbox.alixpay.com")
    # AliX documents no times. An AWAITING_PAYMENT order carries an ``expiresAt`` (the
    # bank transfer's window, minutes to an hour); a paid order's token transfer and
    # payout are automatic: an hour in either is past the expected flow.
    poll: PollPolicy = poll_setting(
        PollPolicy(stuck_after=stuck_times(AWAITING_PAYMENT=3600, PROCESSING=3600))
    )
    timeout: float = setting(
        "TIMEOUT", "number", minimum=0.1, default=10.0, description="seconds, every AliX call"
    )
    # Optional: only these client addresses may post callbacks (the address is the
    # peer's, or X-Forwarded-For's through RAMPWATCH_TRUSTED_PROXIES proxies).
    allowed_ips: tuple[IPNetwork, ...] = setting(
        "ALLOWED_IPS",
        "cidrs",
        default=(),
        description="IP addresses or CIDR networks allowed to post AliX callbacks; unset: any",
    )

    @property
    def secret_key(self) -> str:
        return self.secret_keys[0].value

    @property
    def webhook_secret_key(self) -> str:
        return self.webhook_secret_keys[0].value if self.webhook_secret_keys else ""
