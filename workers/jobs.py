"""RQ jobs: apply an event, poll one order, poll a batch of due orders, sweep due orders,
heal after a bad signature, deliver an order's notifications to the partner.

Error policy, enforced in one place (``job``, which wraps every job): jobs do
not swallow exceptions. A ``DataError`` (bad payload, an unknown or disabled
provider, an order the provider does not know, an answer whose signature fails)
goes to RQ's failed registry at once, without retries: running it again cannot
help. Anything else (database or Redis trouble, a provider timeout) is retried
on the job's ``Retry`` schedule, and polls are retried by the sweep in any case.
A database outage (unreachable, connections killed, locked) does not count
against the job's retries, and makes the worker wait for the database before
its next job (``workers.outages``): an outage of any length loses no job.

At most one poll of an order runs at a time, whatever asked for it (sweep,
callback trigger, healing, operator): a poll that finds another one under way
schedules itself a little later instead (nothing is lost, nothing races). The
store orders answers by the time they were fetched in any case. The sweep's polls
run in batches of one provider's orders, fetched concurrently and applied together
(``workers.polls``); a batch does not fail for one order's failure.

A change of an order's status writes a notification in the same transaction
(``orders.store``); when ``NOTIFY_URL`` is set, the job that made the change queues
the order's delivery (``deliver_notifications``, one job per order), and the sweep
queues the delivery of every order with a notification due (a retry's time come, a
lost job), so none waits on a job that never ran.

Every job's log lines carry its RQ job id, and the provider and order once known
(``config.logs``). What the jobs did is counted (``config.metrics``, through the
process's ``Services.metrics``): events by decision, transitions, anomalies, polls
by outcome; counting never fails a job.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import requests.adapters
from rq import get_current_job
from sqlalchemy.exc import SQLAlchemyError

from config.logs import bind, log_context
from orders.errors import DataError, ProviderError
from orders.events import Event
from workers.drain import after_apply, deliver_changes, prepare
from workers.notify import Deliverer, Report
from workers.outages import database_unavailable
from workers.polls import hand_out
from workers.polls import poll_batch as poll_orders
from workers.services import NoServices, Services, current

log = logging.getLogger("rampwatch.jobs")

F = TypeVar("F", bound=Callable[..., Any])


def job(func: F) -> F:
    """The error policy: a ``DataError`` fails the job at once (no retry); a database
    outage keeps the job's retry and holds the worker until the database is back;
    anything else propagates to RQ, which retries it on the job's schedule."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        running = get_current_job()
        with log_context(job_id=running.id if running is not None else None):
            try:
                return func(*args, **kwargs)
            except DataError:
                _no_retry()
                raise
            except SQLAlchemyError as exc:
                if database_unavailable(exc):
                    _outage()
                raise

    return run  # type: ignore[return-value]


def _no_retry() -> None:
    running = get_current_job()
    if running is not None:
        running.retries_left = 0


def _outage() -> None:
    """The database is down: the retry RQ is about to spend is given back (so the job
    is retried soon, and an outage of any length exhausts nothing), and the worker is
    told to wait for the database before it takes another job."""
    running = get_current_job()
    if running is not None and running.retries_left is not None:
        running.retries_left += 1
    try:
        current().database_watch.note_down()
    except NoServices:
        pass


@job
def apply_event(payload: dict[str, Any]) -> dict[str, Any]:
    """Apply one queued event through the single writer: the RQ path callbacks took before
    the callback stream (``workers.drain``), kept so that jobs queued before an upgrade, and
    operators' requeues of them, are still applied the same way.

    A callback whose provider signs no status (``callbacks_are_triggers``) is
    recorded, then a poll of its order is queued (rate-limited, never dropped):
    the poll's answer is what changes the order."""
    event = Event.from_dict(payload)
    bind(provider=event.provider, order_id=event.external_order_id or event.provider_order_id)
    rt = current()
    event = prepare(rt, event)
    bind(order_id=event.external_order_id)
    (outcome,) = rt.store.apply([event])
    deliver_changes(rt, [outcome])
    after_apply(rt, event, outcome)
    return {"decision": outcome.decision.value, "status": outcome.status.value, "version": outcome.version}


@job
def poll_order(provider: str, external_order_id: str, reason: str = "sweep") -> dict[str, Any]:
    """Ask the provider for the order's present state and apply it as a ``poll`` event,
    unless a poll of the order is under way: then one is scheduled for later."""
    bind(provider=provider, order_id=external_order_id)
    rt = current()
    lock = rt.queues.poll_lock(provider, external_order_id)
    running = get_current_job()
    if not rt.queues.take_poll_lock(lock, running.worker_name if running else None):
        state = rt.queues.enqueue_deferred_poll(provider, external_order_id, reason)
        rt.metrics.inc("rampwatch_polls", provider=provider, outcome="deferred")
        log.info("poll of %s order (%s) deferred: another poll is under way (%s)", provider, reason, state)
        return {"deferred": True, "queued": state}
    try:
        return _poll(rt, provider, external_order_id, reason)
    finally:
        rt.queues.release(lock)


def _poll(rt: Services, provider: str, external_order_id: str, reason: str) -> dict[str, Any]:
    kind, provider_order_id = rt.store.order_ref(provider, external_order_id) or (None, None)
    try:
        event = rt.adapter(provider).poll(external_order_id, kind=kind, provider_order_id=provider_order_id)
    except ProviderError as exc:
        rt.metrics.inc("rampwatch_polls", provider=provider, outcome="failed")
        rt.store.poll_failed(provider, external_order_id)
        log.warning("poll of %s order failed (%s): %s", provider, reason, exc)
        raise
    except DataError:
        rt.metrics.inc("rampwatch_polls", provider=provider, outcome="failed")
        raise
    (outcome,) = rt.store.apply([event])
    rt.metrics.inc(
        "rampwatch_polls", provider=provider, outcome="applied" if outcome.changed else "unchanged"
    )
    rt.deliver_change(outcome)
    log.info(
        "polled %s order (%s): %s -> %s", provider, reason, event.provider_status, outcome.decision.value
    )
    return {
        "provider_status": event.provider_status,
        "decision": outcome.decision.value,
        "status": outcome.status.value,
        "version": outcome.version,
    }


@job
def poll_batch(provider: str, external_order_ids: list[str], reason: str = "sweep") -> dict[str, int]:
    """Poll several due orders of one provider concurrently and apply their answers together
    (``workers.polls``): an order whose poll fails is counted and backed off, its neighbours
    are applied. What it did, by outcome."""
    bind(provider=provider)
    running = get_current_job()
    return poll_orders(
        current(), provider, external_order_ids, reason, worker_name=running.worker_name if running else None
    )


@job
def poll_if_known(provider: str, external_order_id: str) -> dict[str, Any]:
    """After a callback failed verification: poll the order if we know it and it is
    open (within the healing budget), else nothing."""
    rt = current()
    if not rt.store.is_open(provider, external_order_id):
        return {"polled": False}
    if not rt.queues.take_heal_budget():
        log.warning("healing poll of a %s order skipped: the healing budget is spent", provider)
        return {"polled": False, "budget": "spent"}
    return {"polled": True, **poll_order(provider, external_order_id, reason="failed verification")}


@job
def deliver_notifications(order_id: int) -> dict[str, Any]:
    """Send the order's due notifications, oldest first, until one fails (``workers.notify``);
    schedule that one's retry, or the rest when the run's budget is spent. The sweep
    queues any order with a notification due in any case."""
    rt = current()
    if not rt.settings.notify_url:
        return {"skipped": "NOTIFY_URL is not set"}
    return _deliver(rt, [order_id])[order_id].as_dict()


@job
def deliver_notifications_of(order_ids: list[int]) -> dict[str, Any]:
    """``deliver_notifications`` for the orders a batch of changes touched
    (``Queues.enqueue_deliveries``), in rounds (``workers.notify``): each round one
    transaction and up to ``NOTIFY_CONCURRENCY`` requests at once over one keep-alive
    session, each order's notifications in order; no round starts past the job's budget
    (``workers.notify.BUDGET``), the orders left are scheduled again. A database or Redis
    outage fails the job (RQ retries it); what was sent is recorded already."""
    rt = current()
    if not rt.settings.notify_url:
        return {"skipped": "NOTIFY_URL is not set"}
    reports = _deliver(rt, order_ids)
    totals = {"orders": len(reports), "delivered": 0, "failed": 0, "dead": 0, "left": 0}
    for report in reports.values():
        totals["delivered"] += report.delivered
        totals["failed"] += report.failed
        totals["dead"] += report.dead
        totals["left"] += report.budget_spent
    return totals


def _deliver(rt: Services, order_ids: list[int]) -> dict[int, Report]:
    """One run over ``order_ids`` (``Deliverer.run_many``), up to ``NOTIFY_CONCURRENCY``
    requests at once over one keep-alive session, then each order's follow-up."""
    ids = list(dict.fromkeys(order_ids))
    threads = max(1, min(rt.settings.notify_concurrency, len(ids)))
    with requests.Session() as session:
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=threads)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        reports = Deliverer.from_settings(rt.settings, rt.store, session, rt.metrics).run_many(ids, threads)
    for order_id, report in reports.items():
        _follow_up(rt, order_id, report)
    return reports


def _follow_up(rt: Services, order_id: int, report: Report) -> None:
    """After one order's run: schedule its failed notification's retry, or, when the run's
    budget was spent, the rest."""
    if report.retry_in is not None and report.retry_job is not None:
        rt.queues.schedule_delivery(order_id, report.retry_in, report.retry_job)
    elif report.budget_spent:
        rt.queues.schedule_delivery(order_id, 0, f"notify-again-{order_id}")


@job
def sweep() -> dict[str, Any]:
    """Queue the polls of due open orders in batches, within a bound on the polls queue's
    backlog (``workers.polls.hand_out``), flag orders past their horizon, and, when
    notifications are pushed, queue the delivery of every order with one due."""
    rt = current()
    handout = hand_out(rt)
    stale = rt.store.flag_stale()
    stuck = rt.store.flag_stuck()
    for flagged in stale:
        rt.metrics.inc("rampwatch_anomalies", provider=flagged.provider, kind="stale")
    if handout.due or stale or stuck:
        log.info(
            "sweep: %d due, %d polls queued in %d batches, %d flagged stale, %d flagged stuck",
            handout.due,
            handout.queued,
            handout.batches,
            len(stale),
            len(stuck),
        )
    deliveries = _queue_due_deliveries(rt)
    return {
        "due": handout.due,
        "queued": handout.queued,
        "batches": handout.batches,
        "stale": len(stale),
        "stuck": len(stuck),
        "deliveries": deliveries,
    }


def _queue_due_deliveries(rt: Services) -> int:
    """The safety net of delivery: every order whose oldest pending notification is due (a
    retry's time come, a job lost or never queued) gets its delivery queued, in a bounded
    batch. None while notifications are not pushed."""
    if not rt.settings.notify_url:
        return 0
    orders = rt.store.orders_with_due_notifications(rt.settings.sweep_batch)
    queued = sum(1 for order_id in orders if rt.queues.enqueue_delivery(order_id))
    if orders:
        log.info("sweep: %d orders with notifications due, %d deliveries queued", len(orders), queued)
    return queued
