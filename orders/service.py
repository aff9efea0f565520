"""Order creation through a provider, shared by the HTTP API and the CLI.

The order is recorded as CREATED *before* the provider is called, so a crash or
a timeout in between leaves an order the reconciler polls, never an order the
provider has and we do not. The provider's answer then goes through ``apply``
like any other event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orders.errors import ProviderDisabled
from orders.events import utcnow
from orders.providers.base import CreatingAdapter
from orders.store import Outcome, Store


def create_order(store: Store, adapter: object, request: Mapping[str, Any]) -> Outcome:
    """Validate, record CREATED, call the provider, apply its answer. Raises
    InvalidPayload before anything is written, ProviderError after the CREATED record."""
    if not isinstance(adapter, CreatingAdapter):
        raise ProviderDisabled(
            f"provider {getattr(adapter, 'slug', '?')} does not support order creation here"
        )
    valid = adapter.validate_create(request)
    (created,) = store.apply([adapter.creation_event(valid, utcnow())])
    answer = adapter.submit_create(valid)
    if answer is None:  # the provider acknowledged without an order state (Fuspay)
        return created
    (outcome,) = store.apply([answer])
    return outcome
