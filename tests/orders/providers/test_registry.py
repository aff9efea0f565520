"""Every registered provider meets the adapter contract and has a status map."""

from __future__ import annotations

import inspect

import pytest
from conftest import Keys, alix_settings, changelly_settings, fuspay_settings

from config import Settings
from orders.providers import PROVIDERS, STATUS_MAPS, build_adapters
from orders.providers.base import ProviderAdapter
from orders.states import RANK, Status


@pytest.mark.parametrize("slug", sorted(PROVIDERS))
def test_registered_adapters_conform(slug: str, keys: Keys) -> None:
    settings = Settings(
        database_url="sqlite://",
        redis_url="redis://x",
        providers={
            "alixpay": alix_settings(keys, "http://127.0.0.1:9"),
            "changelly": changelly_settings(keys, "http://127.0.0.1:9"),
            "fuspay": fuspay_settings("http://127.0.0.1:9"),
        },
    )
    adapter = build_adapters(settings)[slug]
    assert isinstance(adapter, ProviderAdapter)
    assert adapter.slug == slug
    assert adapter.status_map is STATUS_MAPS[slug] is PROVIDERS[slug].status_map
    for name in ("parse_callback", "poll", "order_hint"):
        expected = list(inspect.signature(getattr(ProviderAdapter, name)).parameters)[1:]
        assert list(inspect.signature(getattr(adapter, name)).parameters) == expected, name


@pytest.mark.parametrize("slug", sorted(STATUS_MAPS))
def test_status_maps_place_every_status_in_the_lifecycle(slug: str) -> None:
    status_map = STATUS_MAPS[slug]
    assert status_map.provider == slug
    for raw, mapped in status_map.entries.items():
        assert raw and mapped.status is not Status.CREATED
        if mapped.status is not Status.ON_HOLD:
            assert mapped.rank == RANK[mapped.status], raw


def test_disabled_providers_get_no_adapter() -> None:
    assert build_adapters(Settings(database_url="sqlite://", redis_url="redis://x")) == {}
