"""The dev kit has a sandbox and a demo for every provider of the product's registry."""

from __future__ import annotations

from devkit.supervisor import PROVIDERS as DEV_PROVIDERS
from orders.providers import PROVIDERS


def test_every_registered_provider_has_its_dev_kit_entry() -> None:
    assert set(DEV_PROVIDERS) == set(PROVIDERS)
