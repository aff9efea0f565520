"""The provider registry: one slug names the URL segment, the folder, the fixtures
and the settings prefix. Only providers whose settings are present get an adapter."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import requests

from config import PollPolicy, Settings
from orders.providers.alixpay.adapter import AlixPayAdapter
from orders.providers.alixpay.statuses import STATUS_MAP as ALIXPAY_STATUSES
from orders.providers.base import ProviderAdapter
from orders.providers.changelly.adapter import ChangellyAdapter
from orders.providers.changelly.statuses import STATUS_MAP as CHANGELLY_STATUSES
from orders.providers.fuspay.adapter import FuspayAdapter
from orders.providers.fuspay.statuses import STATUS_MAP as FUSPAY_STATUSES
from orders.states import StatusMap

# slug -> factory taking (provider settings, requests session)
PROVIDERS: Mapping[str, Callable[..., ProviderAdapter]] = {
    "alixpay": AlixPayAdapter,
    "changelly": ChangellyAdapter,
    "fuspay": FuspayAdapter,
}

STATUS_MAPS: Mapping[str, StatusMap] = {
    "alixpay": ALIXPAY_STATUSES,
    "fuspay": FUSPAY_STATUSES,
    "changelly": CHANGELLY_STATUSES,
}


def build_adapters(settings: Settings, session: requests.Session | None = None) -> dict[str, ProviderAdapter]:
    """An adapter for every enabled provider."""
    session = session or requests.Session()
    adapters: dict[str, ProviderAdapter] = {}
    for slug, factory in PROVIDERS.items():
        provider_settings = settings.provider(slug)
        if provider_settings is not None:
            adapters[slug] = factory(provider_settings, session)
    return adapters


def poll_policies(settings: Settings) -> dict[str, PollPolicy]:
    out = {}
    for slug in PROVIDERS:
        provider_settings = settings.provider(slug)
        if provider_settings is not None:
            out[slug] = provider_settings.poll  # type: ignore[attr-defined]
    return out
