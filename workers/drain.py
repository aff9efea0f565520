"""The callback stream's consumer: read a batch, apply it in one transaction, acknowledge it.

Each worker process runs one ``Drainer`` in a thread beside its RQ work loop
(``workers.worker``), as consumer ``<worker name>`` of the stream's group. Why a thread
of the worker and not an RQ job woken by the receiver: a job per burst would pay RQ's
bookkeeping again and add a wake-up's latency to every quiet period's first callback,
while a blocking ``XREADGROUP`` costs nothing while idle and answers within a round
trip; and one Procfile ``worker`` line still runs everything a worker does.

A pass (``drain_once``):

1. take over entries pending longer than ``claim_idle`` (a dead consumer's, a failed
   apply's), at most every ``claim_idle / 2`` seconds; else read new ones, waiting up to
   ``block`` for the first. When entries were already waiting but fewer than half a
   batch, wait ``RAMPWATCH_STREAM_LINGER`` (20 ms) for more before applying (see below);
2. prepare each event (what its signature covers, our order id when the callback names
   only the provider's); an event that is bad data goes to the dead-letter stream;
3. apply the batch in one transaction, then acknowledge what it applied (``XACK`` +
   ``XDEL``); queue the delivery of the notifications it wrote (one job for the batch) and
   the polls of callbacks that are triggers.
   The transaction skips the orders another consumer's transaction is writing
   (``Store.apply_free``, ``SKIP LOCKED`` on PostgreSQL) and carries their entries to the
   next pass, so consumers whose batches name the same orders work side by side instead
   of committing one after another; a pass that could apply nothing waits for the locks;
4. if the batch fails, apply it event by event: a poisoned event cannot fail its
   neighbours. One that fails as bad data is dead-lettered at once; one that fails
   otherwise stays pending, is taken over again after ``claim_idle``, and is
   dead-lettered after ``max_deliveries``. A database outage counts against nothing: the
   entries are given back uncounted and the drainer waits for the database.

Why the linger: several consumers reading a busy stream each find a few entries (what
arrived since another's read) and apply them at once, so that the cost of a transaction
(its lock and history queries, its commit, the acknowledgement) falls on a handful of
events; with four workers on two cores each callback cost twice the CPU of one worker's
(``bench_scale``: 2 web + 4 workers drained 888 callbacks/s against 1,602 for 1 + 1).
Waiting 20 ms for more when entries were already waiting gave 1,565/s at 1.24 ms of CPU
a callback. The wait is ``RAMPWATCH_STREAM_LINGER`` for every live consumer of the group
(those given entries within the last few seconds, counted four times a second), at most
``LINGER_CONSUMERS_MOST`` times it: n consumers sharing a stream each see 1/n of what
arrives, so a wait n times as long gives each the batch one consumer would read, and a
callback the CPU one consumer would spend on it (``bench_scale``, 2 + 4, 2,000 orders: 20 ms
for all gave 0.076 transactions a callback and 1.37 ms of CPU; 80 ms, 0.029 and 1.15 ms).
A quiet stream is not kept waiting: an entry a read had to wait for is applied at once
(and a burst drain, ``drain``, never lingers). Nor is a backlog: half a batch waiting is
read and applied without a wait.

SIGTERM (``stop``) lets the batch in hand finish and be acknowledged, and applies what is
carried, waiting for its locks; what is read and not applied when the process dies is
taken over by another worker. The store's dedup (one
applied row per dedup key) makes every re-delivery harmless: exactly once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from config.logs import bind, log_context
from orders.errors import DataError
from orders.events import Event
from orders.store import Outcome
from workers.outages import database_unavailable
from workers.services import Services
from workers.stream import Entry, EventStream

log = logging.getLogger("rampwatch.drain")

BLOCK_MS = 1000  # the longest a read waits for a first entry (and a stop waits on a read)
FORGET_EVERY = 600.0  # seconds between two clean-ups of stopped workers' consumers
FORGET_IDLE_MS = 3_600_000  # a consumer holding nothing, idle this long, is a stopped worker's
LIVE_WITHIN_MS = 3000  # a consumer given entries this recently shares the stream's flow
COUNT_EVERY = 0.25  # seconds between two counts of the live consumers
LINGER_CONSUMERS_MOST = 5  # the linger grows with the live consumers up to this many


class Drainer:
    """One consumer of the callback stream (see the module docstring)."""

    def __init__(self, runtime: Services, consumer: str, *, block_ms: int = BLOCK_MS):
        settings = runtime.settings
        self.rt = runtime
        self.stream: EventStream = runtime.stream
        self.consumer = consumer
        self.batch = settings.stream_batch
        self.claim_idle_ms = int(settings.stream_claim_idle * 1000)
        self.max_deliveries = settings.stream_max_deliveries
        self.block_ms = block_ms
        self.linger = settings.stream_linger
        self._consumers = 1  # live consumers of the group, as last counted
        self._next_count = 0.0
        self._next_claim = 0.0
        self._next_forget = time.monotonic() + FORGET_EVERY
        self._stop = threading.Event()
        # Read, prepared, not applied yet: their orders were being written by another
        # consumer's transaction. Applied first in the next pass (see ``settle``).
        self._carry: list[tuple[Entry, Event]] = []

    # ------------------------------------------------------------------ the loop

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Drain until ``stop``: the thread's body. Redis or database trouble is waited out."""
        delay = 0.5
        while not self.stopping:
            try:
                self.drain_once(block_ms=self.block_ms)
                delay = 0.5
            except RedisError as exc:
                if self.stopping:
                    break
                log.warning("drainer %s: redis unavailable (%s)", self.consumer, type(exc).__name__)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
            except Exception:
                log.exception("drainer %s: a pass failed", self.consumer)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        self._settle_carry()

    def _settle_carry(self) -> None:
        """Stopping: what was carried is applied now, waiting for its orders' locks (else it
        stays pending and another worker takes it over after ``claim_idle``)."""
        carry, self._carry = self._carry, []
        if not carry:
            return
        try:
            self._apply(carry, wait=True)
        except Exception as exc:  # left pending: taken over by another worker
            log.warning("drainer %s: %d carried callbacks left pending (%s)", self.consumer, len(carry), exc)

    def drain(self, *, until: Callable[[], bool] = lambda: False) -> int:
        """Drain what is there now, without waiting (burst workers, tests); how many applied."""
        done = 0
        self._next_claim = 0.0
        while not until():
            n = self.drain_once(block_ms=None)
            if n is None:
                break
            done += n
        return done

    def drain_once(self, block_ms: int | None) -> int | None:
        """One pass; how many entries were settled (applied or dead-lettered), None when
        there was nothing to read."""
        watch = self.rt.database_watch
        if watch.is_down and not watch.wait_until_up(self.rt.store.engine, stopping=lambda: self.stopping):
            return 0
        entries = self._claim()
        room = self.batch - len(self._carry)
        if not entries and room > 0:
            entries = self._read(room, block_ms)
        if not entries and not self._carry:
            return None
        return self.settle(entries)

    def _read(self, room: int, block_ms: int | None) -> list[Entry]:
        """New entries, up to ``room``. What is waiting is read first; when that is fewer
        than half of ``room`` and the drainer runs (``block_ms`` set), it waits the linger
        for more (module docstring). When nothing was waiting, the read waits up to
        ``block_ms`` for the first entry, applied at once. With entries carried, only what is
        there already: they are to be applied now."""
        entries = self.stream.read(self.consumer, room, None)
        if self._carry or block_ms is None:
            return entries
        if not entries:
            return self.stream.read(self.consumer, room, block_ms)
        if len(entries) < room // 2 and self.linger > 0 and not self._stop.wait(self._lingering()):
            entries += self.stream.read(self.consumer, room - len(entries), None)
        return entries

    def _lingering(self) -> float:
        """The linger now: ``linger`` for each live consumer, at most
        ``LINGER_CONSUMERS_MOST`` times it (module docstring)."""
        now = time.monotonic()
        if now >= self._next_count:
            self._next_count = now + COUNT_EVERY
            self._consumers = self.stream.live_consumers(LIVE_WITHIN_MS)
        return self.linger * min(self._consumers, LINGER_CONSUMERS_MOST)

    def _claim(self) -> list[Entry]:
        now = time.monotonic()
        if now >= self._next_forget:
            self._next_forget = now + FORGET_EVERY
            gone = self.stream.forget_idle_consumers(FORGET_IDLE_MS, keep=self.consumer)
            if gone:
                log.info("drainer %s: forgot %d consumers of stopped workers", self.consumer, gone)
        if now < self._next_claim:
            return []
        entries = self.stream.claim(self.consumer, self.claim_idle_ms, self.batch)
        # Claim again soon while there is a backlog of abandoned entries, else in a while.
        self._next_claim = now if len(entries) == self.batch else now + self.claim_idle_ms / 2000
        return entries

    # ------------------------------------------------------------------ one batch

    def settle(self, entries: list[Entry]) -> int:
        """Apply ``entries``, after those carried from the last pass, and acknowledge what is
        done.

        The batch is applied in one transaction that skips the orders another consumer's
        transaction is writing (``Store.apply_free``): those are carried to the next pass
        instead of waited for, so consumers whose batches name the same orders work side by
        side instead of one after another. A pass that could apply nothing waits for the
        locks. If the transaction fails, the batch is applied event by event."""
        ready, settled = self._prepare(entries)
        ready, self._carry = self._carry + ready, []
        if not ready:
            return settled
        return settled + self._apply(ready, wait=False)

    def _prepare(self, entries: list[Entry]) -> tuple[list[tuple[Entry, Event]], int]:
        """The entries' events as the writer takes them; bad data and entries delivered too
        often are dead-lettered (counted as settled)."""
        ready: list[tuple[Entry, Event]] = []
        settled = 0
        for entry in entries:
            if entry.deliveries > self.max_deliveries:
                self._dead(entry, f"delivered {entry.deliveries - 1} times without being applied")
                settled += 1
                continue
            try:
                ready.append((entry, prepare(self.rt, entry.event())))
            except DataError as exc:
                self._dead(entry, f"{type(exc).__name__}: {exc}")
                settled += 1
            except Exception as exc:  # e.g. the provider's API down while resolving our id
                log.warning("callback %s could not be prepared (%s); it will be retried", entry.id, exc)
        return ready, settled

    def _apply(self, ready: list[tuple[Entry, Event]], *, wait: bool) -> int:
        """Apply and acknowledge; how many were settled. Without ``wait``, what another
        transaction holds is carried (or, when nothing was free, waited for)."""
        events = [event for _, event in ready]
        try:
            outcomes = self.rt.store.apply(events) if wait else self.rt.store.apply_free(events)
        except Exception as exc:
            if _outage(exc):
                self._outage(entry for entry, _ in ready)
                return 0
            log.warning("a batch of %d callbacks failed (%s); applying them one by one", len(ready), exc)
            return self._one_by_one(ready)
        if wait:
            done = list(zip(ready, outcomes, strict=True))
            busy: list[tuple[Entry, Event]] = []
        else:
            done = [(pair, o) for pair, o in zip(ready, outcomes, strict=True) if o is not None]
            busy = [pair for pair, o in zip(ready, outcomes, strict=True) if o is None]
        if done:
            self.stream.ack([entry.id for (entry, _), _ in done])
            deliver_changes(self.rt, [outcome for _, outcome in done])
            for (entry, event), outcome in done:
                after_apply(self.rt, event, outcome, entry.id)
        if busy and not done:
            return self._apply(busy, wait=True)  # nothing was free: wait rather than spin
        self._carry = busy
        return len(done)

    def _one_by_one(self, ready: list[tuple[Entry, Event]]) -> int:
        settled = 0
        for index, (entry, event) in enumerate(ready):
            try:
                (outcome,) = self.rt.store.apply([event])
            except DataError as exc:
                self._dead(entry, f"{type(exc).__name__}: {exc}")
                settled += 1
                continue
            except Exception as exc:
                if _outage(exc):
                    self._outage(e for e, _ in ready[index:])
                    return settled
                # Left pending: taken over again after claim_idle, dead-lettered after max_deliveries.
                log.warning(
                    "callback %s failed (delivery %d of %d): %s",
                    entry.id,
                    entry.deliveries,
                    self.max_deliveries,
                    exc,
                )
                continue
            self.stream.ack([entry.id])
            deliver_changes(self.rt, [outcome])
            after_apply(self.rt, event, outcome, entry.id)
            settled += 1
        return settled

    def _dead(self, entry: Entry, error: str) -> None:
        dead_id = self.stream.dead_letter(entry, error)
        self.rt.metrics.inc("rampwatch_callbacks_dead_lettered", provider=_provider_of(entry))
        log.error("callback %s dead-lettered as %s: %s", entry.id, dead_id, error)

    def _outage(self, entries: Any) -> None:
        """The database is down: these deliveries do not count, and the drainer waits for it."""
        for entry in entries:
            self.stream.give_back(self.consumer, entry, self.claim_idle_ms)
        self.rt.database_watch.note_down()
        self._next_claim = 0.0


def _provider_of(entry: Entry) -> str:
    try:
        return str(json.loads(entry.payload or b"{}").get("provider") or "unknown")
    except (ValueError, AttributeError):
        return "unknown"


def _outage(exc: BaseException) -> bool:
    return isinstance(exc, SQLAlchemyError) and database_unavailable(exc)


def prepare(rt: Services, event: Event) -> Event:
    """The event as the writer takes it: what its signature covers, and our order id."""
    if event.covers is None:  # a version 1 payload: what the adapter declares
        covers = rt.adapter(event.provider).covers.get(event.source, ())
        event = dataclasses.replace(event, covers=covers)
    if not event.external_order_id:
        event = resolve_order(rt, event)
    return event


def deliver_changes(rt: Services, outcomes: list[Outcome]) -> None:
    """The deliveries of the notifications applied callbacks wrote: one job for a batch."""
    try:
        rt.deliver_changes(outcomes)
    except RedisError as exc:
        # Applied already: the sweep queues due deliveries in any case.
        log.warning("after applying callbacks: redis unavailable (%s)", type(exc).__name__)


def after_apply(rt: Services, event: Event, outcome: Outcome, entry_id: str | None = None) -> None:
    """What follows an applied callback, once its notification's delivery is queued
    (``deliver_changes``): the poll of a callback that only triggers one (its provider
    signs no status); then its log line (with the stream entry's id when it came from the
    stream)."""
    ids = {"entry_id": entry_id} if entry_id else {}
    with log_context(provider=event.provider, order_id=event.external_order_id, **ids):
        try:
            adapter = rt.adapters.get(event.provider)
            if adapter is not None and adapter.callbacks_are_triggers and event.source == "callback":
                window = getattr(rt.settings.provider(event.provider), "callback_poll_window", 10)
                rt.queues.enqueue_trigger_poll(event.provider, event.external_order_id, window)
        except RedisError as exc:
            # Applied already: the sweep polls due orders in any case.
            log.warning("after applying a callback: redis unavailable (%s)", type(exc).__name__)
        log.info(
            "applied %s %s event: %s -> %s (v%d)%s%s",
            event.provider,
            event.source,
            event.provider_status,
            outcome.decision.value,
            outcome.version,
            " (replay)" if outcome.replayed else "",
            f" anomalies={','.join(outcome.anomalies)}" if outcome.anomalies else "",
        )


def resolve_order(rt: Services, event: Event) -> Event:
    """A callback naming only the provider's order id: find ours, in the store or by a poll."""
    assert event.provider_order_id
    bind(provider=event.provider)
    known = rt.store.external_id_for(event.provider, event.provider_order_id)
    if known is None:
        known = (
            rt.adapter(event.provider).poll("", provider_order_id=event.provider_order_id).external_order_id
        )
    return dataclasses.replace(event, external_order_id=known)
