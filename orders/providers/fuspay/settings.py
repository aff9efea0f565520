"""Fuspay Axis settings: which variables configure the provider, read by ``config``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from config import IPNetwork, Named, PollPolicy, poll_setting, setting, stuck_times

RECIPES = ("hmac-sha512", "sha512-append", "sha512-prepend", "oracle")
SIGNATURE_KEYS = ("public+secret", "secret")


@dataclass(frozen=True)
class FuspaySettings:
    prefix: ClassVar[str] = "FUSPAY_"
    label: ClassVar[str] = "Fuspay Axis"

    partner_id: str = setting("PARTNER_ID", required=True, description="partner id (x-partner-id)")
    public_keys: tuple[Named[str], ...] = setting(
        "PUBLIC_KEY",
        required=True,
        secret=True,
        rotation=True,
        description="partner public key (pk_partner_...): part of the signing key",
    )
    secret_keys: tuple[Named[str], ...] = setting(
        "SECRET_KEY",
        required=True,
        secret=True,
        rotation=True,
        description="partner secret key (sk_partner_...): bearer token and part of the signing key",
    )
    base_url: str = setting(
        "BASE_URL",
        "url",
        required=True,
        description="e.g. https://exchanger-api.fuspay.finance/api/v1/no-auth",
    )
    # Fuspay does not publish its exact recipe (doc bug F-7): a setting, not code.
    signature_recipe: str = setting(
        "SIGNATURE_RECIPE", "choice", options=RECIPES, default=RECIPES[0], description="how events are signed"
    )
    signature_key: str = setting(
        "SIGNATURE_KEY",
        "choice",
        options=SIGNATURE_KEYS,
        default=SIGNATURE_KEYS[0],
        description="the signing key material",
    )
    # Our webhook URL, sent as partner_callback_url on every sell order we create.
    callback_url: str | None = setting(
        "CALLBACK_URL", "url", default=None, description="our webhook URL, sent on orders we create"
    )
    # Fuspay documents no times: the user's crypto deposit follows the quote at once
    # (init), a received deposit is paid out as fiat by Fuspay's own rails, and a KYC
    # error waits for the user (on hold).
    poll: PollPolicy = poll_setting(
        PollPolicy(
            stuck_after=stuck_times(AWAITING_PAYMENT=3600, PAYMENT_RECEIVED=2 * 3600, ON_HOLD=24 * 3600)
        )
    )
    timeout: float = setting(
        "TIMEOUT", "number", minimum=0.1, default=10.0, description="seconds, every Fuspay call"
    )
    # Optional: only these client addresses may post callbacks (the address is the
    # peer's, or X-Forwarded-For's through RAMPWATCH_TRUSTED_PROXIES proxies).
    allowed_ips: tuple[IPNetwork, ...] = setting(
        "ALLOWED_IPS",
        "cidrs",
        default=(),
        description="IP addresses or CIDR networks allowed to post Fuspay callbacks; unset: any",
    )

    @property
    def secret_key(self) -> str:
        return self.secret_keys[0].value

    @property
    def public_key(self) -> str:
        return self.public_keys[0].value
