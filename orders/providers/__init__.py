"""The provider registry: the one place that lists the providers.

Each provider is a folder (``orders/providers/<slug>/``: signing, status map,
settings, API client, adapter) whose ``__init__`` defines its ``PROVIDER``
entry; adding a provider is its folder plus one line in ``REGISTRY`` below.
The status maps, the slugs, the settings classes the configuration reads, and
the adapters of the enabled providers all derive from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import requests

from config import PollPolicy, Settings
from config import load_settings as _load_settings
from orders.providers import alixpay, changelly, fuspay
from orders.providers.base import Provider, ProviderAdapter
from orders.states import StatusMap

REGISTRY: tuple[Provider, ...] = (
    alixpay.PROVIDER,
    changelly.PROVIDER,
    fuspay.PROVIDER,
)

PROVIDERS: Mapping[str, Provider] = {p.slug: p for p in REGISTRY}
STATUS_MAPS: Mapping[str, StatusMap] = {p.slug: p.status_map for p in REGISTRY}
SETTINGS: Mapping[str, type] = {p.slug: p.settings for p in REGISTRY}


def load_settings(env: Mapping[str, str] | None = None, base_dir: Path | None = None) -> Settings:
    """``config.load_settings`` for the registered providers."""
    return _load_settings(env, base_dir, providers=SETTINGS)


def build_adapters(settings: Settings, session: requests.Session | None = None) -> dict[str, ProviderAdapter]:
    """An adapter for every enabled provider."""
    session = session or requests.Session()
    return {
        slug: entry.adapter(provider_settings, session)
        for slug, entry in PROVIDERS.items()
        if (provider_settings := settings.provider(slug)) is not None
    }


def poll_policies(settings: Settings) -> dict[str, PollPolicy]:
    """The poll policy of every enabled provider."""
    return {slug: s.poll for slug, s in settings.providers.items() if slug in PROVIDERS}
