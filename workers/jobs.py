"""RQ jobs: apply an event, poll one order, sweep due orders, heal after a bad signature.

Error policy: jobs do not swallow exceptions. A ``DataError`` (bad payload, an
order the provider does not know, an answer whose signature fails) goes to RQ's
failed registry at once, without retries: running it again cannot help. Anything
else (database or Redis trouble, a provider timeout) is retried on the job's
``Retry`` schedule, and polls are retried by the sweep in any case.
"""

from __future__ import annotations

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
    """Apply one queued event (from a callback) through the single writer."""
    try:
        event = Event.from_dict(payload)
    except DataError:
        _no_retry()
        raise
    rt = current()
    (outcome,) = rt.store.apply([event])
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


def poll_order(provider: str, external_order_id: str, reason: str = "sweep") -> dict[str, Any]:
    """Ask the provider for the order's present state and apply it as a ``poll`` event."""
    rt = current()
    try:
        event = rt.adapter(provider).poll(external_order_id)
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
