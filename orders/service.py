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

**Idempotent.** The provider is called at most once per order, however often and
however concurrently the creation is asked for. The first request *claims* the
order (``Store.claim_creation``: one insert, decided by the unique indexes on
(provider, order id) and (provider, ``Idempotency-Key``)) with its request hash
marked pending, calls the provider, and settles the hash once the call has
ended, whatever its end. The hash is over the canonical JSON of the *validated*
request (defaults filled in), so two spellings of one request are one request.
A later request with the same key, or without a key for the same order id:

* same request, call ended: no provider call; the order as it stands now,
  flagged ``replayed`` (a refused creation replays as its FAILED order);
* same request, the first still waiting for the provider: ``Conflict``
  ``creation_in_progress`` (retry in a second); a pending mark older than
  ``CREATION_FLIGHT`` is a crashed request's, and replays as settled;
* a different request: ``Conflict`` ``idempotency_conflict``;
* an order we know but did not create here (adopted from a callback or a poll):
  ``Conflict`` ``order_exists``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from orders.errors import Conflict, ProviderDisabled, ProviderError, ProviderRejected
from orders.events import COVERS_ALL, Event, utcnow
from orders.providers.base import CreatingAdapter
from orders.states import Decision, Status
from orders.store import Outcome, Store

log = logging.getLogger("rampwatch.service")

PENDING = "pending:"  # request_hash while our call to the provider has not ended
# Past this, a pending mark is a crashed request's (every provider call times out far sooner).
CREATION_FLIGHT = timedelta(minutes=2)
IN_PROGRESS_RETRY_AFTER = 1  # seconds


def request_hash(valid: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a validated creation request (base64url, 43 characters)."""
    canonical = json.dumps(valid, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def create_order(
    store: Store,
    adapter: object,
    request: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    on_change: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """Validate, claim the order, record CREATED, call the provider, apply its answer.

    Raises InvalidPayload before anything is written, Conflict when the order was
    asked for before with another request (or is still being created), ProviderError
    after the CREATED record. A repeat of a creation returns an ``Outcome`` with
    ``replayed`` set, the order's present status and version, and calls nobody.
    ``on_change`` is told of every outcome that changed the order's status (the
    caller queues the partner's notification; the sweep would, a little later)."""
    outcomes: list[Outcome] = []
    try:
        return _create(store, adapter, request, idempotency_key, outcomes)
    finally:
        if on_change is not None:
            for outcome in outcomes:
                if outcome.changed:
                    on_change(outcome)


class _Recording:
    """``Store.apply`` that keeps what it applied (for ``on_change``)."""

    def __init__(self, store: Store, outcomes: list[Outcome]):
        self.store = store
        self.outcomes = outcomes

    def apply(self, events: list[Event]) -> list[Outcome]:
        done = self.store.apply(events)
        self.outcomes.extend(done)
        return done


def _create(
    store: Store,
    adapter: object,
    request: Mapping[str, Any],
    idempotency_key: str | None,
    outcomes: list[Outcome],
) -> Outcome:
    if not isinstance(adapter, CreatingAdapter):
        raise ProviderDisabled(
            f"provider {getattr(adapter, 'slug', '?')} does not support order creation here"
        )
    valid = adapter.validate_create(request)
    digest = request_hash(valid)
    creation = adapter.creation_event(valid, utcnow())
    provider, order_id = creation.provider, creation.external_order_id
    marker = PENDING + digest
    first = store.claim_creation(provider, order_id, idempotency_key, marker)
    if first is not None:
        return _repeat(store, creation, first, digest, idempotency_key)
    writer = _Recording(store, outcomes)
    try:
        (created,) = writer.apply([creation])
    except BaseException:
        _quietly(store.release_creation, provider, order_id, marker)
        raise
    try:
        return _submit(writer, adapter, valid, created)
    finally:
        # Whatever the call's end, it has ended: repeats replay from here on.
        _quietly(store.settle_creation, provider, order_id, marker, digest)


def _submit(store: _Recording, adapter: CreatingAdapter, valid: dict[str, Any], created: Outcome) -> Outcome:
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


def _repeat(store: Store, creation: Event, first: Any, digest: str, key: str | None) -> Outcome:
    """A creation asked for again: the replay, or why not (``Conflict``)."""
    order_id = creation.external_order_id
    if first.request_hash is None:
        raise Conflict(
            f"order {order_id} is already known (from the provider) and was not created through rampwatch",
            code="order_exists",
        )
    pending = first.request_hash.startswith(PENDING)
    if first.external_order_id != order_id or first.request_hash.removeprefix(PENDING) != digest:
        which = (
            f"Idempotency-Key {key!r} was first used"
            if key is not None and first.idempotency_key == key
            else f"order {order_id} was first created"
        )
        raise Conflict(f"{which} with a different request", code="idempotency_conflict")
    if pending and store.clock() - first.created_at < CREATION_FLIGHT:
        raise Conflict(
            f"order {order_id} is being created by an earlier request; retry shortly",
            code="creation_in_progress",
            retry_after=IN_PROGRESS_RETRY_AFTER,
        )
    return Outcome(
        event=creation,
        decision=Decision.DUPLICATE,
        status=Status(first.status),
        version=first.version,
        changed=False,
        replayed=True,
    )


def _quietly(write: Any, *args: str) -> None:
    """A bookkeeping write after the fact; if the database is gone, the pending mark
    expires (``CREATION_FLIGHT``) and the original outcome is what the caller sees."""
    try:
        write(*args)
    except SQLAlchemyError as exc:
        log.warning("creation bookkeeping (%s) failed: %s", write.__name__, type(exc).__name__)


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
