"""Order creation through a provider, shared by the HTTP API and the CLI.

The order is recorded as CREATED *before* the provider is called, so a crash or
a timeout in between leaves an order the reconciler polls, never an order the
provider has and we do not. How the call ends is recorded too, through
``apply`` like any other event:

* the provider's answer: applied (its status, its ids);
* a refusal (``ProviderRejected``: the provider said no): the order ends
  FAILED, with the provider's reason in ``details.creation_error``, and is no
  longer polled;
* no answer (timeout, outage, an answer that did not verify): the order stays
  open and is polled, marked ``details.creation = "unconfirmed"`` until the
  provider shows it.

Either way the error is raised again for the caller (the API answers 502 or 503).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from orders.errors import ProviderDisabled, ProviderError, ProviderRejected
from orders.events import COVERS_ALL, Event, utcnow
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
    try:
        answer = adapter.submit_create(valid)
    except ProviderRejected as exc:
        store.apply([_ended(created.event, "refused", exc)])
        raise
    except ProviderError as exc:
        store.apply([_ended(created.event, "unconfirmed", exc)])
        raise
    if answer is None:  # the provider acknowledged without an order state (Fuspay)
        return created
    (outcome,) = store.apply([answer])
    return outcome


def _ended(created: Event, outcome: str, exc: ProviderError) -> Event:
    """The record of how our creation request ended without an answer."""
    reason = str(exc)[:300]
    return Event(
        provider=created.provider,
        external_order_id=created.external_order_id,
        provider_status=None,
        source="create",
        dedup_key=f"create:{outcome}",
        raw_body=json.dumps({"creation": outcome, "error": reason}, separators=(",", ":")),
        received_at=utcnow().isoformat(),
        covers=COVERS_ALL,
        creation=outcome,
        details={"creation": outcome, "creation_error": reason},
    )
