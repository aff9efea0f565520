"""RQ jobs: apply an event, poll one order, sweep due orders, heal after a bad signature.

Error policy: jobs do not swallow exceptions. A ``DataError`` (bad payload, an
order the provider does not know, an answer whose signature fails) goes to RQ's
failed registry at once, without retries: running it again cannot help. Anything
else (database or Redis trouble, a provider timeout) is retried on the job's
``Retry`` schedule, and polls are retried by the sweep in any case.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from rq import get_current_job

from orders.errors import DataError, ProviderError
from orders.events import Event
from workers.runtime import current

log = logging.getLogger("rampwatch.jobs")


def _no_retry() -> None:
    job = get_current_job()
    if job is not None:
        job.retries_left = 0


def apply_event(payload: dict[str, Any]) -> dict[str, Any]:
    """Apply one queued event (from a callback) through the single writer.

    A callback whose provider signs no status (``callbacks_are_triggers``) is
    recorded, then a poll of its order is queued (rate-limited, never dropped):
    the poll's answer is what changes the order."""
    try:
        event = Event.from_dict(payload)
    except DataError:
        _no_retry()
        raise
    rt = current()
    adapter = rt.adapters.get(event.provider)
    if not event.external_order_id:
        event = _resolve_order(rt, event)
    (outcome,) = rt.store.apply([event])
    if adapter is not None and adapter.callbacks_are_triggers and event.source == "callback":
        window = getattr(rt.settings.provider(event.provider), "callback_poll_window", 10)
        rt.queues.enqueue_trigger_poll(event.provider, event.external_order_id, window)
    log.info(
        "applied %s %s event: %s -> %s (v%d)%s",
        event.provider,
        event.source,
        event.provider_status,
        outcome.decision.value,
        outcome.version,
        f" anomalies={','.join(outcome.anomalies)}" if outcome.anomalies else "",
    )
    return {"decision": outcome.decision.value, "status": outcome.status.value, "version": outcome.version}


def _resolve_order(rt: Any, event: Event) -> Event:
    """A callback naming only the provider's order id: find ours, in the store or by a poll."""
    assert event.provider_order_id
    known = rt.store.external_id_for(event.provider, event.provider_order_id)
    if known is None:
        known = (
            rt.adapter(event.provider).poll("", provider_order_id=event.provider_order_id).external_order_id
        )
    return dataclasses.replace(event, external_order_id=known)


def poll_order(provider: str, external_order_id: str, reason: str = "sweep") -> dict[str, Any]:
    """Ask the provider for the order's present state and apply it as a ``poll`` event."""
    rt = current()
    kind, provider_order_id = rt.store.order_ref(provider, external_order_id) or (None, None)
    try:
        event = rt.adapter(provider).poll(external_order_id, kind=kind, provider_order_id=provider_order_id)
    except ProviderError as exc:
        rt.store.poll_failed(provider, external_order_id)
        if isinstance(exc, DataError):
            _no_retry()
        log.warning("poll of %s order failed (%s): %s", provider, reason, exc)
        raise
    except DataError:
        _no_retry()
        raise
    (outcome,) = rt.store.apply([event])
    log.info(
        "polled %s order (%s): %s -> %s", provider, reason, event.provider_status, outcome.decision.value
    )
    return {
        "provider_status": event.provider_status,
        "decision": outcome.decision.value,
        "status": outcome.status.value,
        "version": outcome.version,
    }


def poll_if_known(provider: str, external_order_id: str) -> dict[str, Any]:
    """After a callback failed verification: poll the order if we know it, else nothing."""
    rt = current()
    if not rt.store.exists(provider, external_order_id):
        return {"polled": False}
    return {"polled": True, **poll_order(provider, external_order_id, reason="failed verification")}


def sweep() -> dict[str, Any]:
    """Enqueue one poll per due open order (bounded batch) and flag orders past their horizon."""
    rt = current()
    due = rt.store.claim_due(rt.settings.sweep_batch, rt.settings.poll_lease, rt.adapters.keys())
    queued = sum(1 for d in due if rt.queues.enqueue_poll(d.provider, d.external_order_id, "sweep"))
    stale = rt.store.flag_stale()
    if due or stale:
        log.info("sweep: %d due, %d polls queued, %d flagged stale", len(due), queued, len(stale))
    return {"due": len(due), "queued": queued, "stale": len(stale)}
