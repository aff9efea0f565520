"""Order creation through a provider, shared by the HTTP API and the CLI.

The order is recorded as CREATED *before* the provider is called, so a crash or
a timeout in between leaves an order the reconciler polls, never an order the
provider has and we do not. The provider's answer then goes through ``apply``
like any other event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from orders.errors import ProviderDisabled
from orders.events import Event, utcnow
from orders.store import Outcome, Store


class CreatingAdapter(Protocol):
    slug: str

    def validate_create(self, request: Mapping[str, Any]) -> dict[str, Any]: ...

    def creation_event(self, request: Mapping[str, Any], received_at: Any) -> Event: ...

    def submit_create(self, request: Mapping[str, Any]) -> Event | None: ...


def create_order(store: Store, adapter: object, request: Mapping[str, Any]) -> Outcome:
    """Validate, record CREATED, call the provider, apply its answer. Raises
    InvalidPayload before anything is written, ProviderError after the CREATED record."""
    if not all(hasattr(adapter, m) for m in ("validate_create", "creation_event", "submit_create")):
        raise ProviderDisabled(
            f"provider {getattr(adapter, 'slug', '?')} does not support order creation here"
        )
    creator: CreatingAdapter = adapter  # type: ignore[assignment]
    valid = creator.validate_create(request)
    (created,) = store.apply([creator.creation_event(valid, utcnow())])
    answer = creator.submit_create(valid)
    if answer is None:  # the provider acknowledged without an order state (Fuspay)
        return created
    (outcome,) = store.apply([answer])
    return outcome
