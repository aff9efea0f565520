"""The sweep's polls, in batches: how the sweep hands out due orders, and how one batch of a
provider's orders is asked about concurrently and applied together.

Handing out (``hand_out``): the sweep claims due orders (``Store.claim_due``, which leases
them) in rounds of ``RAMPWATCH_SWEEP_BATCH``, as long as claims come back full and the
``polls`` queue holds fewer than ``SWEEP_BACKLOG`` rounds' worth of orders (a batch counts
its orders, any other job one). It cuts each provider's orders into batches of
``RAMPWATCH_POLL_BATCH`` and queues them alternating between providers, so that one
provider's backlog does not queue ahead of all the others'. A queue still deep from the
last sweep gets nothing more: Redis holds a bounded backlog, and leased orders are polled
well within their lease.

A batch (``poll_batch``): takes each order's poll lock (an order whose lock is held gets a
deferred poll, as a single poll would), fetches the answers from a thread pool of
``RAMPWATCH_POLL_CONCURRENCY`` threads over the process's pooled session, whose per-host
semaphore bounds the requests in flight to the provider from the whole process
(``workers.pooling``), applies the answers in one ``Store.apply`` transaction, then
releases every lock and queues the deliveries of what changed (one job for the batch).
Fetches not started within ``BATCH_BUDGET`` seconds are left for a later sweep (their
lease runs out), so a provider answering slowly holds a worker for a bounded time.

Error policy: what is one order's own (the provider refused, failed or timed out on it; its
answer did not verify; its apply was refused) is counted as a failed poll, backs the order
off (``Store.poll_failed``) and leaves its neighbours alone. A batch apply that fails is
retried order by order, so one bad answer cannot fail the others. A database outage ends
the batch at once, and ``workers.jobs.job`` gives it the treatment of every job. An
unexpected error (a bug) is logged with its order, the rest of the batch is finished, then
it is raised so that RQ records the job as failed.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from redis.lock import Lock
from sqlalchemy.exc import SQLAlchemyError

from config.logs import log_context
from orders.errors import RampwatchError
from orders.events import Event
from orders.providers.base import ProviderAdapter
from orders.store import DueOrder, Outcome
from workers.outages import database_unavailable

if TYPE_CHECKING:
    from workers.services import Services

log = logging.getLogger("rampwatch.polls")

SWEEP_BACKLOG = 4  # the sweep tops the polls queue up to this many claims' worth of orders
BATCH_BUDGET = 30.0  # seconds a batch may start fetches for; later ones wait for a later sweep


@dataclass
class Handout:
    due: int = 0  # orders claimed
    queued: int = 0  # of which in batches queued now (the rest: the same batch already queued)
    batches: int = 0


def hand_out(rt: Services) -> Handout:
    """Claim due orders and queue them in batches, within the backlog bound (module docstring)."""
    settings = rt.settings
    bound = SWEEP_BACKLOG * settings.sweep_batch
    room = bound - rt.queues.queued_polls(bound)
    claimed: list[DueOrder] = []
    while room > 0:
        limit = min(settings.sweep_batch, room)
        due = rt.store.claim_due(limit, settings.poll_lease, rt.adapters.keys())
        claimed.extend(due)
        room -= len(due)
        if len(due) < limit:
            break
    done = Handout(due=len(claimed))
    for provider, ids in interleave(batches(claimed, settings.poll_batch)):
        if rt.queues.enqueue_poll_batch(provider, ids, "sweep"):
            done.queued += len(ids)
            done.batches += 1
    return done


def batches(due: Iterable[DueOrder], size: int) -> dict[str, list[list[str]]]:
    """Each provider's orders, in the order claimed, cut into lists of at most ``size``."""
    by_provider: dict[str, list[str]] = {}
    for order in due:
        by_provider.setdefault(order.provider, []).append(order.external_order_id)
    return {p: [ids[i : i + size] for i in range(0, len(ids), size)] for p, ids in by_provider.items()}


def interleave(cut: dict[str, list[list[str]]]) -> Iterator[tuple[str, list[str]]]:
    """One batch of each provider in turn, until all are out."""
    for i in range(max((len(b) for b in cut.values()), default=0)):
        for provider in sorted(cut):
            if i < len(cut[provider]):
                yield provider, cut[provider][i]


@dataclass
class BatchReport:
    orders: int = 0
    applied: int = 0
    unchanged: int = 0
    failed: int = 0
    deferred: int = 0  # another poll of the order was under way: one is scheduled later
    skipped: int = 0  # not fetched within the budget: a later sweep polls it


def poll_batch(
    rt: Services,
    provider: str,
    external_order_ids: Sequence[str],
    reason: str = "sweep",
    *,
    worker_name: str | None = None,
    budget: float = BATCH_BUDGET,
) -> dict[str, int]:
    """Poll ``external_order_ids`` of ``provider`` and apply the answers together (module
    docstring). Raises ``ProviderDisabled`` for a provider not configured, a database
    outage as it comes, and a bug after the rest of the batch is done."""
    adapter = rt.adapter(provider)
    ids = list(dict.fromkeys(external_order_ids))
    report = BatchReport(orders=len(ids))
    bugs: list[BaseException] = []
    held: list[tuple[str, Lock]] = []
    began = time.monotonic()
    locked = fetched = applied = began
    try:
        for oid in ids:
            lock = rt.queues.poll_lock(provider, oid)
            if rt.queues.take_poll_lock(lock, worker_name):
                held.append((oid, lock))
                continue
            state = rt.queues.enqueue_deferred_poll(provider, oid, reason)
            rt.metrics.inc("rampwatch_polls", provider=provider, outcome="deferred")
            report.deferred += 1
            with log_context(order_id=oid):
                log.info(
                    "poll of %s order (%s) deferred: another poll is under way (%s)", provider, reason, state
                )
        locked = time.monotonic()
        answers = _fetch(rt, adapter, [oid for oid, _ in held], locked + budget)
        fetched = time.monotonic()
        events: list[Event] = []
        for oid, answer in answers.items():
            if answer is None:
                report.skipped += 1
            elif isinstance(answer, Event):
                events.append(answer)
            else:
                _failed(rt, provider, oid, reason, answer, bugs)
                report.failed += 1
        results = _apply(rt, events)
        applied = time.monotonic()
        rt.deliver_changes([result for _, result in results if isinstance(result, Outcome)])
        for event, result in results:
            if isinstance(result, Outcome):
                changed = result.changed
                rt.metrics.inc(
                    "rampwatch_polls", provider=provider, outcome="applied" if changed else "unchanged"
                )
                report.applied += changed
                report.unchanged += not changed
            else:
                _failed(rt, provider, event.external_order_id, reason, result, bugs)
                report.failed += 1
    finally:
        for _, lock in held:
            rt.queues.release(lock)
    if report.skipped:
        log.warning(
            "poll of %d %s orders (%s): %d not asked within %gs, left for a later sweep",
            len(ids),
            provider,
            reason,
            report.skipped,
            budget,
        )
    log.info(
        "polled %s orders (%s) in %.2fs (locks %.2fs, fetch %.2fs, apply %.2fs): %s",
        provider,
        reason,
        time.monotonic() - began,
        locked - began,
        fetched - locked,
        applied - fetched,
        asdict(report),
    )
    if bugs:
        raise bugs[0]
    return asdict(report)


def _fetch(
    rt: Services, adapter: ProviderAdapter, ids: list[str], deadline: float
) -> dict[str, Event | BaseException | None]:
    """Each order's answer (an Event), the error its fetch raised, or None when the
    budget ran out before its turn. At most RAMPWATCH_POLL_CONCURRENCY at once."""
    if not ids:
        return {}

    refs = rt.store.order_refs(adapter.slug, ids)  # one query for the batch

    def fetch(oid: str) -> Event | BaseException | None:
        if time.monotonic() > deadline:
            return None
        kind, provider_order_id = refs.get(oid, (None, None))
        try:
            return adapter.poll(oid, kind=kind, provider_order_id=provider_order_id)
        except Exception as exc:  # judged by the batch, in the job's thread
            return exc

    threads = min(rt.settings.poll_concurrency, len(ids))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"poll-{adapter.slug}") as pool:
        # Each fetch runs in a copy of the job's context: its log lines carry the job's ids.
        futures = {oid: pool.submit(contextvars.copy_context().run, fetch, oid) for oid in ids}
        return {oid: future.result() for oid, future in futures.items()}


def _apply(rt: Services, events: list[Event]) -> list[tuple[Event, Outcome | BaseException]]:
    """Apply ``events`` in one transaction; if that fails for any reason but an outage,
    one by one, each with its outcome or its error."""
    if not events:
        return []
    try:
        return list(zip(events, rt.store.apply(events), strict=True))
    except Exception as exc:
        if isinstance(exc, SQLAlchemyError) and database_unavailable(exc):
            raise
        log.warning("applying %d polled answers together failed (%s): one by one", len(events), exc)
    results: list[tuple[Event, Outcome | BaseException]] = []
    for event in events:
        try:
            (outcome,) = rt.store.apply([event])
            results.append((event, outcome))
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError) and database_unavailable(exc):
                raise
            results.append((event, exc))
    return results


def _failed(
    rt: Services, provider: str, oid: str, reason: str, error: BaseException, bugs: list[BaseException]
) -> None:
    """One order's poll failed: count it, back the order off, log why (a bug, with its trace)."""
    rt.metrics.inc("rampwatch_polls", provider=provider, outcome="failed")
    rt.store.poll_failed(provider, oid)
    with log_context(order_id=oid):
        if isinstance(error, RampwatchError | SQLAlchemyError):
            log.warning("poll of %s order failed (%s): %s", provider, reason, error)
        else:
            log.error("poll of %s order failed (%s)", provider, reason, exc_info=error)
            bugs.append(error)
