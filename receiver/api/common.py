"""What several ``/api`` views share: the provider's adapter, a usable order id, the reader."""

from __future__ import annotations

from typing import Any

from flask import current_app

from orders.errors import InvalidPayload, ProviderDisabled
from orders.providers.payload import MAX_ID, usable_order_id
from orders.store import Store


def adapter_for(provider: str) -> Any:
    adapter = current_app.extensions["rampwatch"].adapters.get(provider)
    if adapter is None:
        raise ProviderDisabled(f"provider {provider} is not configured")
    return adapter


def order_id(external_order_id: str) -> str:
    """An order id no order can have (a control character, a lone surrogate, over
    128 characters) is a 400 before it reaches a query or a job."""
    if not usable_order_id(external_order_id):
        raise InvalidPayload(
            f"an order id is 1 to {MAX_ID} characters, without control characters",
            ["external_order_id"],
        )
    return external_order_id


def reader() -> Store:
    """The store on the read-only engine: a reader never waits for a writer's lock."""
    return current_app.extensions["rampwatch.reader"]


def writer() -> Store:
    return current_app.extensions["rampwatch"].store
