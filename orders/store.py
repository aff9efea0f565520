"""The order store and its one writer, ``Store.apply``.

``apply`` takes a batch of events and, in one transaction, for each order in a
fixed order (so two batches never deadlock): takes the order's row lock
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` write
lock), adopts the order if it has never been seen, reads what the order has
seen, asks ``orders.plan`` what the event does, and writes exactly that: the
event with its decision (or, for a replay, one more count on the record it
repeats), the order columns the plan changes, and the anomalies it raises.
The writer decides nothing itself. Callbacks, polls, creation and manual
replays all come through here.

Dedup counts what was applied, not what was received: a duplicate is an event
whose dedup key was already *applied* to the order. An event whose transaction
failed left no trace and is applied when retried.

Readers (``order_view``, ``claim_due``...) live here too so that every query on
the tables is in one module.
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Select, and_, bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from config import PollPolicy
from orders.db import make_sessionmaker
from orders.errors import AnomalyNotFound, BadEventPayload, Conflict, ProviderDisabled
from orders.events import ANSWER_SOURCES, Event, utcnow
from orders.models import Anomaly, EventRecord, Notification, Order
from orders.plan import AnomalyKind, Observation, OrderFacts, Plan, plan, remember
from orders.states import TERMINAL, Decision, Status, StatusMap
from orders.views import order_head

__all__ = ["AnomalyKind", "DueOrder", "Outcome", "Store"]

Clock = Callable[[], datetime]
log = logging.getLogger("rampwatch.store")

STATUS_CHANGED = "order.status_changed"
STUCK = "order.stuck"
# Held (PostgreSQL, to the end of the transaction) by every transaction that writes
# notifications, from their insert to its commit: their ids are then in commit order,
# so a reader paging the events feed by id never skips one that commits late.
FEED_LOCK = 0x72616D70  # "ramp"
# The class of the advisory locks a consumer that does not wait (``apply_free``) takes on
# PostgreSQL for each order it is about to adopt, keyed by a CRC-32 of the order's key:
# two such consumers adopting the same new order would otherwise insert it both, and the
# second would wait on the first's uncommitted insert for the whole of the first's batch.
ADOPT_LOCKS = 0x61646F70  # "adop"


@dataclass(frozen=True)
class Outcome:
    """What ``apply`` did with one event."""

    event: Event
    decision: Decision
    status: Status
    version: int
    changed: bool  # the canonical status changed (and a notification was written)
    anomalies: tuple[str, ...] = ()
    replayed: bool = False  # the same delivery again: counted on its record
    order_id: int | None = None  # the store's id of the order


@dataclass(frozen=True)
class DueOrder:
    provider: str
    external_order_id: str


_RECORDS = EventRecord.__table__
# One more delivery (or several) of a recorded event, and when it was last seen.
RECOUNT = (
    update(_RECORDS)
    .where(_RECORDS.c.id == bindparam("record_id"))
    .values(seen_count=_RECORDS.c.seen_count + bindparam("more"), last_seen_at=bindparam("last"))
)
KEYS_PER_STATEMENT = 500  # orders named in one IN (...): well under SQLite's bound on parameters
_ORDERS = Order.__table__


class _OrderRow:
    """An order's columns as the batch read them, as attributes (named as on ``Order``),
    changed in place as the batch's plans decide; what then differs from what was read is
    written at the batch's end (``_Writes``, ``changed``). The writer reads and writes its
    orders through the tables, not the ORM: its unit of work (identity map, change
    tracking, a flush sorting its updates) cost more per event than the plan."""

    def __init__(self, read: Mapping[str, Any]):
        self.__dict__.update(read)
        self._read = read

    def changed(self) -> dict[str, Any]:
        """The columns set to another value than the one read."""
        read = self._read
        return {k: v for k, v in self.__dict__.items() if k != "_read" and v != read[k]}


@dataclass
class _OrderWork:
    order: _OrderRow
    history: list[Observation] = field(default_factory=list)
    # the rows of records this batch adds, by fingerprint (written at its end: ``_Writes``)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    # recorded events' last-seen times as read (``last_seen_at``, else ``received_at``)
    last_seen: dict[int, datetime] = field(default_factory=dict)


@dataclass
class _Writes:
    """What a transaction writes in the events and outbox tables, gathered as it decides and
    written together at its end (``write``), each kind by one statement run for every row
    (the driver's executemany): the ORM's unit of work cost more than the writer's
    decisions, per event, and a read of each repeated record more still."""

    records: list[dict[str, Any]] = field(default_factory=list)
    # the anomalies the records raised: (the record's index in ``records``, the row)
    anomalies: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # deliveries again of records committed before: record id -> [count, last seen]
    recounts: dict[int, list[Any]] = field(default_factory=dict)
    notices: list[dict[str, Any]] = field(default_factory=list)

    def write(self, session: Session, orders: Iterable[_OrderRow] = ()) -> None:
        """The orders' changed columns (one statement for each set of columns changed
        together); the records, in the order they were decided (their ids keep it), and
        their anomalies (only then are the records' ids asked back); the counts on older
        records (their orders' locks cover them); the outbox rows last (see ``FEED_LOCK``)."""
        connection = session.connection()
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for order in orders:
            changed = order.changed()
            if changed:
                updates.setdefault(tuple(sorted(changed)), []).append({"_id": order.id, **changed})
        for columns, rows in updates.items():
            stmt = update(_ORDERS).where(_ORDERS.c.id == bindparam("_id"))
            connection.execute(stmt.values({c: bindparam(c) for c in columns}), rows)
        if self.records and not self.anomalies:
            connection.execute(insert(_RECORDS), self.records)
        elif self.records:
            stmt = insert(_RECORDS).returning(_RECORDS.c.id, sort_by_parameter_order=True)
            ids = connection.execute(stmt, self.records).scalars().all()
            rows = [{**row, "event_id": ids[index]} for index, row in self.anomalies]
            connection.execute(insert(Anomaly.__table__), rows)
        if self.recounts:
            rows = [
                {"record_id": record_id, "more": more, "last": last}
                for record_id, (more, last) in self.recounts.items()
            ]
            connection.execute(RECOUNT, rows)
        if not self.notices:
            return
        if session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
            # SQLite has one writer at a time already.
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FEED_LOCK})
        connection.execute(insert(Notification.__table__), self.notices)


class FreshTables:
    """A new PostgreSQL deployment's tables analysed as soon as they hold enough to plan by.

    Until its first ``ANALYZE``, PostgreSQL plans a table from guesses: a batch's lock of
    its orders then read every order of the provider through any index that leads with
    ``provider`` (``ix_orders_stuck_due``), filtering them, so that each batch cost more
    than the one before (``bench_drain``: 1,128 events/s on PostgreSQL against 1,683 once
    analysed). Autovacuum analyses a new table only at its next round (a minute by
    default), and a backlog drained meanwhile pays for it. So once this process has
    adopted ``AFTER`` orders, it analyses ``orders`` and ``events`` itself if nothing has
    yet; once per process, and never on SQLite (whose planner picks the unique index
    without statistics). Where the database user may not (not the tables' owner), a
    warning says so and autovacuum's round stays the remedy."""

    AFTER = 1000
    TABLES = ("orders", "events")

    def __init__(self, engine: Engine):
        self.engine = engine
        self.pending = engine.dialect.name == "postgresql"
        self.count = 0
        self.lock = threading.Lock()

    def adopted(self, n: int) -> None:
        if self.pending:
            with self.lock:
                self.count += n

    def analyze_when_due(self) -> None:
        if not self.pending or self.count < self.AFTER:
            return
        with self.lock:
            if not self.pending:
                return
            self.pending = False
        try:
            with self.engine.connect() as conn:
                never = conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_user_tables WHERE relid = CAST(:name AS regclass)"
                        " AND last_analyze IS NULL AND last_autoanalyze IS NULL"
                    ),
                    {"name": "orders"},
                )
                if never:
                    for table in self.TABLES:
                        conn.execute(text(f"ANALYZE {table}"))
                    conn.commit()
                    log.info(
                        "analysed the new tables %s after %d adopted orders",
                        ", ".join(self.TABLES),
                        self.count,
                    )
        except SQLAlchemyError as exc:
            log.warning("could not analyse the new tables (autovacuum will): %s", type(exc).__name__)


class Store:
    """The order store. Collaborators come through the constructor."""

    def __init__(
        self,
        engine: Engine,
        status_maps: Mapping[str, StatusMap],
        poll_policies: Mapping[str, PollPolicy],
        clock: Clock = utcnow,
    ):
        self.engine = engine
        self.sessions = make_sessionmaker(engine)
        self.status_maps = status_maps
        self.poll_policies = poll_policies
        self.clock = clock
        self.fresh = FreshTables(engine)
        # Told of every committed batch's outcomes (metrics), by name; one failing is logged.
        self.observers: dict[str, Callable[[Sequence[Outcome]], None]] = {}

    # ------------------------------------------------------------------ writer

    def apply(self, events: Sequence[Event]) -> list[Outcome]:
        """Apply ``events`` in one transaction; outcomes come back in input order.

        Raises ``BadEventPayload`` for an event filed under no order and
        ``ProviderDisabled`` for a provider this store has no status map for,
        before anything is written."""
        return [o for o in self._apply(events, wait=True) if o is not None]

    def apply_free(self, events: Sequence[Event]) -> list[Outcome | None]:
        """``apply``, but only the events of orders no other transaction is writing: the
        others (their rows locked, on PostgreSQL) are skipped, not waited for, and come
        back as None, for the caller to apply later. Concurrent writers whose batches name
        the same orders then each apply what is free instead of committing one after
        another; likewise a new order another such writer is adopting (``ADOPT_LOCKS``).
        On SQLite, with one writer at a time, every event is applied."""
        return self._apply(events, wait=False)

    def _apply(self, events: Sequence[Event], *, wait: bool) -> list[Outcome | None]:
        if not events:
            return []
        for ev in events:
            if not ev.external_order_id:
                # Resolve first (workers.jobs does, by the provider's order id): an
                # order filed under "" would collect every unresolved event.
                raise BadEventPayload(f"{ev.provider} {ev.source} event has no external_order_id")
            if ev.provider not in self.status_maps:
                raise ProviderDisabled(f"provider {ev.provider!r} is not known to the store")
        now = self.clock()
        by_order: dict[tuple[str, str], list[int]] = {}
        for i, ev in enumerate(events):
            by_order.setdefault(ev.order_key, []).append(i)
        outcomes: list[Outcome | None] = [None] * len(events)
        writes = _Writes()
        with self.sessions.begin() as session:
            works = self._lock_or_adopt(session, sorted(by_order), now, wait=wait)
            for key in sorted(by_order):
                work = works.get(key)
                if work is None:  # another transaction is writing this order (wait=False)
                    continue
                for i in by_order[key]:
                    outcomes[i] = self._apply_one(work, events[i], now, writes)
            writes.write(session, (work.order for work in works.values()))
        self.fresh.analyze_when_due()
        done = [o for o in outcomes if o is not None]
        if done:
            for name, observe in self.observers.items():
                try:
                    observe(done)
                except Exception:  # an observer never fails a write that committed
                    log.exception("store observer %s failed", name)
        return outcomes

    def _lock_or_adopt(
        self, session: Session, keys: list[tuple[str, str]], now: datetime, *, wait: bool = True
    ) -> dict[tuple[str, str], _OrderWork]:
        """Lock the batch's orders (adopting those we have never seen) and read their history,
        in a few statements for the whole batch rather than a few per order.

        Rows are locked in the order of their keys (``ORDER BY`` under ``FOR UPDATE`` locks
        in sorted order on PostgreSQL), so two writers with overlapping batches cannot
        deadlock; SQLite has one writer at a time. Without ``wait``, rows another
        transaction holds are skipped (``SKIP LOCKED``) and left out of the answer."""
        orders = self._rows(session, keys, wait=wait)
        missing = [key for key in keys if key not in orders]
        on_postgresql = session.bind.dialect.name == "postgresql"  # type: ignore[union-attr]
        if missing and not wait and on_postgresql:
            # Skipped rows are another writer's: inserting them again would wait for it.
            held = self._existing(session, missing)
            missing = self._unclaimed(session, [key for key in missing if key not in held])
        if missing:
            # Adoption: bare orders; each event's plan decides what of it to write.
            # One statement, compiled once, executed for every row (the driver's executemany:
            # pipelined by psycopg): a multi-row VALUES was compiled anew for each batch.
            dialect = postgresql if on_postgresql else sqlite
            stmt = dialect.insert(Order.__table__).on_conflict_do_nothing(
                index_elements=["provider", "external_order_id"]
            )
            session.connection().execute(stmt, [bare_order(p, o, now) for p, o in missing])
            self.fresh.adopted(len(missing))
            orders.update(self._rows(session, missing, wait=wait))
            assert not wait or all(key in orders for key in missing)
        by_id = {order.id: key for key, order in orders.items()}
        works = {key: _OrderWork(order=order) for key, order in orders.items()}
        for chunk in _chunks(sorted(by_id), KEYS_PER_STATEMENT):
            rows = session.execute(
                select(
                    EventRecord.id,
                    EventRecord.order_id,
                    EventRecord.source,
                    EventRecord.provider_status,
                    EventRecord.dedup_key,
                    EventRecord.fingerprint,
                    EventRecord.decision,
                    EventRecord.observed_at,
                    EventRecord.received_at,
                    EventRecord.last_seen_at,
                )
                .where(EventRecord.order_id.in_(chunk))
                .order_by(EventRecord.order_id, EventRecord.id)
            )
            for r in rows:
                work = works[by_id[r.order_id]]
                work.last_seen[r.id] = r.last_seen_at or r.received_at
                work.history.append(
                    Observation(
                        source=r.source,
                        provider_status=r.provider_status,
                        dedup_key=r.dedup_key,
                        fingerprint=r.fingerprint,
                        decision=r.decision,
                        at=_observed(r.source, r.observed_at or r.received_at, r.last_seen_at),
                        record_id=r.id,
                    )
                )
        return works

    @staticmethod
    def _existing(session: Session, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of ``keys`` have a committed order row (read without locking)."""
        found: set[tuple[str, str]] = set()
        for provider, chunk in _key_chunks(keys):
            stmt = select(Order.external_order_id).where(
                Order.provider == provider, Order.external_order_id.in_(chunk)
            )
            found.update((provider, external_id) for external_id in session.scalars(stmt))
        return found

    @staticmethod
    def _unclaimed(session: Session, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Of ``keys``, the orders no other consumer that does not wait is adopting: this
        transaction takes each one's advisory lock (``ADOPT_LOCKS``) without waiting, and
        leaves out those another holds, for a later pass. Two keys sharing a CRC-32 only
        defer one of them."""
        ids = {key: _adopt_lock_id(key) for key in keys}
        taken = dict(
            session.execute(  # type: ignore[arg-type]
                text(
                    "SELECT k, pg_try_advisory_xact_lock(:cls, k) FROM unnest(CAST(:ids AS integer[])) AS k"
                ),
                {"cls": ADOPT_LOCKS, "ids": sorted(set(ids.values()))},
            ).all()
        )
        return [key for key in keys if taken[ids[key]]]

    @staticmethod
    def _rows(
        session: Session, keys: list[tuple[str, str]], *, wait: bool = True
    ) -> dict[tuple[str, str], _OrderRow]:
        """The orders of ``keys`` that exist, as the writer changes them (``_OrderRow``),
        locked (``FOR UPDATE``) in key order; without ``wait``, those another transaction
        holds are skipped."""
        found: dict[tuple[str, str], _OrderRow] = {}
        lock = session.bind.dialect.name != "sqlite"  # type: ignore[union-attr]
        connection = session.connection()
        for provider, chunk in _key_chunks(keys):
            stmt = (
                select(_ORDERS)
                .where(_ORDERS.c.provider == provider, _ORDERS.c.external_order_id.in_(chunk))
                .order_by(_ORDERS.c.external_order_id)
            )
            if lock:
                stmt = stmt.with_for_update(skip_locked=not wait)
            for row in connection.execute(stmt).mappings():
                found[(row["provider"], row["external_order_id"])] = _OrderRow(row)
        return found

    def _apply_one(self, work: _OrderWork, ev: Event, now: datetime, writes: _Writes) -> Outcome:
        order = work.order
        decided = plan(
            _facts(order), work.history, ev, self.status_maps[ev.provider], self._policy(ev.provider), now
        )
        for name, value in decided.changes.items():
            setattr(order, name, value)
        if decided.changed:
            # A new state has a new expected time: whatever was stuck is not any more.
            order.status_at = now
            order.stuck_at = None
            order.stuck_reason = None
            writes.notices.append(
                notification(
                    order, STATUS_CHANGED, now, previous_status=decided.before.value, source=ev.source
                )
            )
        work.history = remember(work.history, ev, decided)
        if decided.replay_of is not None:
            self._count_replay(work, writes, decided, ev)
            return self._outcome(ev, decided, order.id, replayed=True)
        covered = ev.covered("provider_status")
        record = dict(
            order_id=order.id,
            provider=ev.provider,
            source=ev.source,
            dedup_key=decided.record_key,
            fingerprint=ev.fingerprint(),
            provider_status=ev.provider_status if covered else None,
            canonical_status=decided.canonical_status,
            decision=decided.decision.value,
            from_status=decided.before.value,
            to_status=decided.after.value,
            version_after=decided.version,
            verified_by=ev.verified_by,
            fiat_amount=ev.fiat_amount if ev.covered("fiat_amount") else None,
            raw_body=ev.raw_body,
            received_at=ev.received,
            recorded_at=now,
            observed_at=ev.observed,
            seen_count=1,
            last_seen_at=ev.observed,
            claimed_status=ev.claimed_status or (None if covered else ev.provider_status),
            covers=",".join(ev.covers or ()) or None,
        )
        work.pending[record["fingerprint"]] = record
        writes.records.append(record)
        for kind, detail in decided.anomalies:
            writes.anomalies.append(
                (
                    len(writes.records) - 1,
                    {
                        "order_id": order.id,
                        "kind": kind,
                        "detail": json.dumps(detail, sort_keys=True),
                        "created_at": now,
                    },
                )
            )
        return self._outcome(ev, decided, order.id)

    @staticmethod
    def _count_replay(work: _OrderWork, writes: _Writes, decided: Plan, ev: Event) -> None:
        seen = decided.replay_of
        assert seen is not None
        # An answer fetched again is newer evidence of the same state; a callback
        # delivered again is not: it keeps the time it first arrived.
        if seen.record_id is None:  # added by this batch: counted on its row
            record = work.pending[seen.fingerprint]
            record["seen_count"] += 1
            record["last_seen_at"] = max(record["last_seen_at"], ev.observed)
            return
        # Committed before: counted at the end of the batch with the others (``_Writes``),
        # not read one by one (a read that also flushed what the batch had added so far).
        count = writes.recounts.setdefault(seen.record_id, [0, work.last_seen[seen.record_id]])
        count[0] += 1
        count[1] = max(count[1], ev.observed)

    @staticmethod
    def _outcome(ev: Event, decided: Plan, order_id: int, *, replayed: bool = False) -> Outcome:
        return Outcome(
            event=ev,
            decision=decided.decision,
            status=decided.after,
            version=decided.version,
            changed=decided.changed,
            anomalies=tuple(kind for kind, _ in decided.anomalies),
            replayed=replayed,
            order_id=order_id,
        )

    def _policy(self, provider: str) -> PollPolicy:
        return self.poll_policies.get(provider) or PollPolicy()

    # ------------------------------------------------------------ the sweep

    def claim_due(self, limit: int, lease_seconds: int, providers: Iterable[str]) -> list[DueOrder]:
        """Pick up to ``limit`` open orders whose poll is due and lease them.

        The lease pushes ``next_poll_at`` forward so that the next sweep does not
        pick the same orders before their poll has run; a poll that never runs
        (lost job, dead worker) makes the order due again when the lease ends.
        """
        now = self.clock()
        providers = list(providers)
        if not providers:
            return []
        with self.sessions.begin() as session:
            stmt = due_query(now, providers, limit)
            if session.bind.dialect.name != "sqlite":  # type: ignore[union-attr]
                stmt = stmt.with_for_update(skip_locked=True)
            rows = session.execute(stmt).all()
            if rows:
                session.execute(
                    update(Order)
                    .where(Order.id.in_([r.id for r in rows]))
                    .values(next_poll_at=now + timedelta(seconds=lease_seconds))
                )
        return [DueOrder(r.provider, r.external_order_id) for r in rows]

    def poll_failed(self, provider: str, external_order_id: str) -> None:
        """A poll could not be made or read: back off before the next one."""
        now = self.clock()
        with self.sessions.begin() as session:
            order = self._rows(session, [(provider, external_order_id)]).get((provider, external_order_id))
            if order is None or Status(order.status) in TERMINAL:
                return
            order.poll_attempts += 1
            order.last_polled_at = now
            delay = self._policy(provider).delay(order.poll_attempts)
            order.next_poll_at = now + timedelta(seconds=delay)
            _Writes().write(session, [order])

    def flag_stuck(self, limit: int = 500) -> list[DueOrder]:
        """Flag open orders that stayed in their state past its expected time (the
        provider's ``stuck_after``), with the reason, and tell the partner once
        (``order.stuck``). A change of state clears the flag (``_apply_one``)."""
        now = self.clock()
        flagged: list[DueOrder] = []
        with self.sessions.begin() as session:
            writes = _Writes()
            for provider in sorted(self.status_maps):
                for status, seconds in self._policy(provider).stuck_after:
                    if len(flagged) >= limit:
                        break
                    stmt = (
                        select(Order)
                        .where(
                            Order.provider == provider,
                            Order.status == status,
                            Order.status_at < now - timedelta(seconds=seconds),
                            Order.stuck_at.is_(None),
                        )
                        .order_by(Order.status_at)
                        .limit(limit - len(flagged))
                    )
                    if session.bind.dialect.name != "sqlite":  # type: ignore[union-attr]
                        stmt = stmt.with_for_update(skip_locked=True)
                    for order in session.scalars(stmt).all():
                        order.stuck_at = now
                        order.stuck_reason = self._stuck_reason(session, order, seconds, now)
                        writes.notices.append(
                            notification(
                                order,
                                STUCK,
                                now,
                                stuck_since=_iso(order.status_at),
                                expected_seconds=seconds,
                                reason=order.stuck_reason,
                            )
                        )
                        flagged.append(DueOrder(order.provider, order.external_order_id))
            writes.write(session)
        return flagged

    @staticmethod
    def _stuck_reason(session: Session, order: Order, expected: int, now: datetime) -> str:
        """Why an order is stuck, for operators: an open anomaly, failing polls, or
        silence (no callback since ...)."""
        waited = _span((now - (order.status_at or now)).total_seconds())
        head = f"{order.status} for {waited} (expected {_span(expected)})"
        kinds = session.scalars(
            select(Anomaly.kind)
            .where(Anomaly.order_id == order.id, Anomaly.resolved_at.is_(None))
            .distinct()
            .order_by(Anomaly.kind)
        ).all()
        if kinds:
            return f"{head}: anomaly open ({', '.join(kinds)})"[:200]
        last = dict(
            session.execute(
                select(EventRecord.source, func.max(EventRecord.recorded_at))
                .where(EventRecord.order_id == order.id, EventRecord.source.in_(("callback", "poll")))
                .group_by(EventRecord.source)
            ).all()
        )
        last_poll = last.get("poll")
        if order.last_polled_at is not None and (last_poll is None or order.last_polled_at > last_poll):
            # poll_failed stamps last_polled_at without an event: the latest polls failed
            since = _iso(last_poll) if last_poll is not None else "the first"
            return f"{head}: polls failing (last answer {since}, {order.poll_attempts} attempts)"[:200]
        callback = last.get("callback")
        return (f"{head}: no callback since {_iso(callback)}" if callback else f"{head}: no callback yet")[
            :200
        ]

    def flag_stale(self, limit: int = 500) -> list[DueOrder]:
        """Raise a ``stale`` anomaly, once, on open orders past their provider's horizon."""
        now = self.clock()
        flagged: list[DueOrder] = []
        with self.sessions.begin() as session:
            for provider in sorted(self.status_maps):
                horizon = now - timedelta(seconds=self._policy(provider).horizon)
                orders = session.scalars(
                    select(Order)
                    .where(
                        Order.terminal_at.is_(None),  # with the next one, the partial index's predicate
                        Order.stale_flagged_at.is_(None),
                        Order.provider == provider,
                        Order.created_at < horizon,
                        Order.status.not_in([s.value for s in TERMINAL]),
                    )
                    .limit(limit)
                ).all()
                for order in orders:
                    order.stale_flagged_at = now
                    session.add(
                        Anomaly(
                            order_id=order.id,
                            kind=AnomalyKind.STALE,
                            detail=json.dumps(
                                {"status": order.status, "open_since": order.created_at.isoformat()},
                                sort_keys=True,
                            ),
                            created_at=now,
                        )
                    )
                    flagged.append(DueOrder(order.provider, order.external_order_id))
        return flagged

    # ------------------------------------------------------------ notifications

    def claim_notifications(
        self, order_ids: Sequence[int], lease_seconds: float, *, delivered: Sequence[int] = ()
    ) -> dict[int, Notification]:
        """Each order's next notification to send, claimed for ``lease_seconds``, by order
        id; an order is left out when its oldest pending one (neither delivered nor dead)
        is not due, or it has none. ``delivered`` are first recorded as delivered
        (``notifications_delivered``) in the same transaction: a run sending many orders'
        notifications pays one transaction for each round of them, not two for each.

        Per order, notifications go out in id (= version) order: a later one waits behind
        the oldest pending one, never passes it. Each order's head (its oldest pending
        one) is found first, then locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
        SQLite's write lock) and re-checked pending once locked; claiming counts the
        attempt and moves ``next_attempt_at`` past the lease: two runs never send the same
        notification at once nor one out of order. A head another transaction holds is
        left out with its order, not waited for: that transaction is claiming it, or
        recording it delivered or failed, and the order is its business. Waiting would
        deadlock two runs whose orders overlap (each holding a head the other wants, one
        of them just recorded delivered), and skipping cannot hand out a later one: the
        head is chosen before the lock. An attempt whose worker died is due again when its
        lease ends, and the sweep picks it up."""
        now = self.clock()
        claimed: dict[int, Notification] = {}
        with self.sessions.begin() as session:
            for chunk in _chunks(list(delivered), KEYS_PER_STATEMENT):
                session.execute(_delivered(chunk, now))
            lock = session.bind.dialect.name != "sqlite"  # type: ignore[union-attr]
            for chunk in _chunks(sorted(set(order_ids)), KEYS_PER_STATEMENT):
                heads = (
                    select(func.min(Notification.id))
                    .where(Notification.order_id.in_(chunk), _pending())
                    .group_by(Notification.order_id)
                )
                stmt = (
                    select(Notification)
                    .where(Notification.id.in_(heads), _pending())
                    .order_by(Notification.id)
                )
                if lock:
                    stmt = stmt.with_for_update(skip_locked=True)
                for head in session.scalars(stmt):
                    if head.next_attempt_at is not None and head.next_attempt_at <= now:
                        claimed[head.order_id] = head
            session.expunge_all()  # what is changed below is written by the UPDATE, not a flush
            if claimed:
                session.execute(
                    update(Notification)
                    .where(Notification.id.in_([note.id for note in claimed.values()]))
                    .values(
                        attempts=Notification.attempts + 1,
                        next_attempt_at=now + timedelta(seconds=lease_seconds),
                    )
                    .execution_options(synchronize_session=False)
                )
                for note in claimed.values():  # as the row now is
                    note.attempts += 1
                    note.next_attempt_at = now + timedelta(seconds=lease_seconds)
        return claimed

    def notifications_delivered(self, notification_ids: Sequence[int]) -> None:
        """The partner acknowledged them (2xx): nothing more to do."""
        now = self.clock()
        with self.sessions.begin() as session:
            for chunk in _chunks(list(notification_ids), KEYS_PER_STATEMENT):
                session.execute(_delivered(chunk, now))

    def notification_failed(self, notification_id: int, error: str, retry_at: datetime | None) -> None:
        """An attempt failed (``error``: short, no body, no secret): try again at
        ``retry_at``, or, when None, dead-letter it (the events feed still serves it)."""
        now = self.clock()
        values: dict[str, object] = {"last_error": error[:300], "next_attempt_at": retry_at}
        if retry_at is None:
            values["dead_at"] = now
        with self.sessions.begin() as session:
            session.execute(
                update(Notification)
                .where(
                    Notification.id == notification_id,
                    Notification.delivered_at.is_(None),
                    Notification.dead_at.is_(None),
                )
                .values(**values)
            )

    def orders_with_due_notifications(self, limit: int) -> list[int]:
        """Ids of up to ``limit`` orders whose oldest pending notification is due, longest
        waiting first. An order whose oldest pending one waits out its backoff is not
        listed, however many are queued behind it: its delivery could send none of them."""
        now = self.clock()
        earlier = Notification.__table__.alias("earlier")
        blocked = (
            select(earlier.c.id)
            .where(
                earlier.c.order_id == Notification.order_id,
                earlier.c.id < Notification.id,
                earlier.c.delivered_at.is_(None),
                earlier.c.dead_at.is_(None),
            )
            .exists()
        )
        with self.sessions() as session:
            rows = session.scalars(
                select(Notification.order_id)
                .where(
                    Notification.next_attempt_at <= now,
                    Notification.delivered_at.is_(None),
                    Notification.dead_at.is_(None),
                    ~blocked,
                )
                .order_by(Notification.next_attempt_at, Notification.id)
                .limit(limit)
            ).all()
        return list(dict.fromkeys(rows))

    # ------------------------------------------------------------ creation and operator writes

    def claim_creation(
        self, provider: str, external_order_id: str, idempotency_key: str | None, marker: str
    ) -> Any:
        """Claim the creation of an order: insert its bare row (what adoption writes)
        holding ``idempotency_key`` and ``marker`` (``request_hash``) in one statement.

        None: the row is ours, and so is the one call to the provider. Otherwise the
        order that already holds the key (or, failing that, the order id), as a row of
        ``external_order_id, idempotency_key, request_hash, status, version,
        created_at``: its creation was claimed first, by this request repeated or by another. The
        unique indexes on (provider, external_order_id) and (provider,
        idempotency_key) decide between racing claims on both databases."""
        now = self.clock()
        values = {
            **bare_order(provider, external_order_id, now),
            "idempotency_key": idempotency_key,
            "request_hash": marker,
        }
        with self.sessions.begin() as session:
            dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite  # type: ignore[union-attr]
            # No conflict target: either unique index turns the insert into nothing.
            stmt = dialect.insert(Order).values(**values).on_conflict_do_nothing().returning(Order.id)
            if session.execute(stmt).scalar_one_or_none() is not None:
                return None
            columns = select(
                Order.external_order_id,
                Order.idempotency_key,
                Order.request_hash,
                Order.status,
                Order.version,
                Order.created_at,
            )
            row = None
            if idempotency_key is not None:
                row = session.execute(
                    columns.where(Order.provider == provider, Order.idempotency_key == idempotency_key)
                ).one_or_none()
            if row is None:
                row = session.execute(
                    columns.where(Order.provider == provider, Order.external_order_id == external_order_id)
                ).one()
            return row

    def settle_creation(self, provider: str, external_order_id: str, marker: str, request_hash: str) -> None:
        """Our call to the provider has ended (however): ``marker`` becomes ``request_hash``."""
        with self.sessions.begin() as session:
            session.execute(
                update(Order)
                .where(
                    Order.provider == provider,
                    Order.external_order_id == external_order_id,
                    Order.request_hash == marker,
                )
                .values(request_hash=request_hash)
            )

    def release_creation(self, provider: str, external_order_id: str, marker: str) -> None:
        """Undo a claim whose creation record could not be written (the provider was not
        called): the bare row goes, so a retry claims it again."""
        with self.sessions.begin() as session:
            session.execute(
                delete(Order).where(
                    Order.provider == provider,
                    Order.external_order_id == external_order_id,
                    Order.request_hash == marker,
                    Order.version == 0,
                    ~select(EventRecord.id).where(EventRecord.order_id == Order.id).exists(),
                )
            )

    def resolve_anomaly(self, anomaly_id: int, comment: str) -> tuple[Anomaly, str, str]:
        """Mark an anomaly resolved with the operator's comment; the anomaly, its order's
        provider and id. Raises AnomalyNotFound, or Conflict (``already_resolved``) if
        it was resolved before."""
        now = self.clock()
        with self.sessions.begin() as session:
            stmt = select(Anomaly, Order.provider, Order.external_order_id).join(
                Order, Order.id == Anomaly.order_id
            )
            stmt = stmt.where(Anomaly.id == anomaly_id)
            if session.bind.dialect.name != "sqlite":  # type: ignore[union-attr]
                stmt = stmt.with_for_update(of=Anomaly)
            row = session.execute(stmt).one_or_none()
            if row is None:
                raise AnomalyNotFound(f"no anomaly {anomaly_id}")
            anomaly = row[0]
            if anomaly.resolved_at is not None:
                raise Conflict(
                    f"anomaly {anomaly_id} was resolved at {anomaly.resolved_at.isoformat()}",
                    code="already_resolved",
                )
            anomaly.resolved_at = now
            anomaly.resolution = comment
        return anomaly, row.provider, row.external_order_id

    # ------------------------------------------------------------ operator repairs

    def replay_event(self, event_id: int) -> Outcome | None:
        """Apply the recorded event ``event_id`` again through ``apply``, as source
        ``replay`` (``rampwatch replay``); None when there is no such event.

        A replay carries no more trust than its record: only what the record shows
        covered and kept (the provider status, a signed fiat amount) is covered again;
        an unsigned claim stays a claim (recorded, never applied); the record's own
        observation time is kept, so an old event replayed cannot pass for fresh
        evidence (nor lift a hold, which only a later answer or a higher rank does),
        and a replay is never an answer (``ANSWER_SOURCES``). A record that vouches for
        no status and claims none (a trigger) has nothing to replay: ``Conflict``
        ``nothing_to_replay`` (ask the provider instead). The same event replayed twice
        is one delivery: counted on the first replay's record."""
        with self.sessions() as session:
            row = session.execute(
                select(EventRecord, Order.external_order_id)
                .join(Order, Order.id == EventRecord.order_id)
                .where(EventRecord.id == event_id)
            ).one_or_none()
        if row is None:
            return None
        record, external_order_id = row
        (outcome,) = self.apply([self._replay_of(record, external_order_id)])
        return outcome

    def redeliver_notification(self, notification_id: int) -> Notification | None:
        """Give a dead or failing notification another go now (``rampwatch notifications
        redeliver``): ``dead_at`` cleared, ``next_attempt_at`` now; its attempts are kept,
        so one more failure past ``NOTIFY_MAX_ATTEMPTS`` dead-letters it again. It is then
        the order's oldest pending notification or behind older pending ones, and
        ``claim_notifications`` still sends an order's notifications in id order. The
        caller queues the order's delivery. None when there is no such notification;
        ``Conflict`` ``already_delivered`` when the partner has it."""
        now = self.clock()
        with self.sessions.begin() as session:
            stmt = select(Notification).where(Notification.id == notification_id)
            if session.bind.dialect.name != "sqlite":  # type: ignore[union-attr]
                stmt = stmt.with_for_update()
            note = session.scalars(stmt).one_or_none()
            if note is None:
                return None
            if note.delivered_at is not None:
                raise Conflict(
                    f"notification {notification_id} was delivered at {note.delivered_at.isoformat()}",
                    code="already_delivered",
                )
            note.dead_at = None
            note.next_attempt_at = now
        return note

    # What a replay may cover again: the fields an event record keeps the value of.
    REPLAYABLE = ("provider_status", "fiat_amount")

    @classmethod
    def _replay_of(cls, record: EventRecord, external_order_id: str) -> Event:
        """The ``replay`` event of a recorded event: what the record kept, trusted no more
        than the record was (``replay_event``). Raises ``Conflict``
        ``nothing_to_replay`` for a record that vouches for no status and claims none."""
        recorded = set((record.covers or "").split(","))
        covers = tuple(c for c in cls.REPLAYABLE if c in recorded and getattr(record, c) is not None)
        status = record.provider_status if "provider_status" in covers else None
        claim = record.claimed_status
        if status is None and claim is None:
            raise Conflict(
                f"event {record.id} vouches for no status and claims none: nothing to replay "
                f"(ask the provider: rampwatch reconcile --provider {record.provider} --order ...)",
                code="nothing_to_replay",
            )
        return Event(
            provider=record.provider,
            external_order_id=external_order_id,
            # A claim travels as an uncovered status: the plan records it, never applies it.
            provider_status=status if status is not None else claim,
            source="replay",
            dedup_key=record.dedup_key,
            raw_body=record.raw_body,
            received_at=(record.observed_at or record.received_at).isoformat(),
            verified_by=record.verified_by,
            fiat_amount=record.fiat_amount if "fiat_amount" in covers else None,
            covers=covers,
            claimed_status=claim,
            identity=f"replay of event {record.id}",
        )

    # ------------------------------------------------------------ readers

    def order_view(self, provider: str, external_order_id: str) -> Order | None:
        """The order with its events and anomalies loaded, or None."""
        if not _storable(provider, external_order_id):
            return None
        with self.sessions() as session:
            return session.scalars(
                select(Order)
                .where(Order.provider == provider, Order.external_order_id == external_order_id)
                .options(selectinload(Order.events), selectinload(Order.anomalies))
            ).one_or_none()

    def open_orders(self, provider: str | None = None, limit: int | None = None) -> list[DueOrder]:
        with self.sessions() as session:
            stmt = select(Order.provider, Order.external_order_id).where(
                Order.status.not_in([s.value for s in TERMINAL])
            )
            if provider:
                stmt = stmt.where(Order.provider == provider)
            stmt = stmt.order_by(Order.id)
            if limit:
                stmt = stmt.limit(limit)
            return [DueOrder(p, e) for p, e in session.execute(stmt).all()]

    def order_ref(self, provider: str, external_order_id: str) -> tuple[str | None, str | None] | None:
        """(kind, provider_order_id) of a known order, or None."""
        if not _storable(provider, external_order_id):
            return None
        with self.sessions() as session:
            row = session.execute(
                select(Order.kind, Order.provider_order_id).where(
                    Order.provider == provider, Order.external_order_id == external_order_id
                )
            ).one_or_none()
            return (row.kind, row.provider_order_id) if row else None

    def order_refs(
        self, provider: str, external_order_ids: Sequence[str]
    ) -> dict[str, tuple[str | None, str | None]]:
        """``order_ref`` of many orders of one provider, in one query per 500: the known ones."""
        wanted = sorted({oid for oid in external_order_ids if _storable(provider, oid)})
        found: dict[str, tuple[str | None, str | None]] = {}
        with self.sessions() as session:
            for chunk in _chunks(wanted, KEYS_PER_STATEMENT):
                rows = session.execute(
                    select(Order.external_order_id, Order.kind, Order.provider_order_id).where(
                        Order.provider == provider, Order.external_order_id.in_(chunk)
                    )
                )
                found.update({r.external_order_id: (r.kind, r.provider_order_id) for r in rows})
        return found

    def external_id_for(self, provider: str, provider_order_id: str) -> str | None:
        """Our order id for the provider's own order id, if we know the order."""
        if not _storable(provider, provider_order_id):
            return None
        with self.sessions() as session:
            return session.scalars(
                select(Order.external_order_id)
                .where(Order.provider == provider, Order.provider_order_id == provider_order_id)
                .limit(1)
            ).first()

    def is_open(self, provider: str, external_order_id: str) -> bool:
        """We know the order and it is not finished."""
        if not _storable(provider, external_order_id):
            return False
        with self.sessions() as session:
            status = session.scalar(
                select(Order.status).where(
                    Order.provider == provider, Order.external_order_id == external_order_id
                )
            )
        return status is not None and Status(status) not in TERMINAL

    def exists(self, provider: str, external_order_id: str) -> bool:
        if not _storable(provider, external_order_id):
            return False
        with self.sessions() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(Order)
                    .where(and_(Order.provider == provider, Order.external_order_id == external_order_id))
                )
                or 0
            ) > 0


def due_query(now: datetime, providers: Sequence[str], limit: int) -> Select[Any]:
    """The sweep's due-order query: open orders of ``providers`` whose poll is due, oldest
    first, read through the partial index of open orders (``ix_orders_open_due``)."""
    return (
        select(Order.id, Order.provider, Order.external_order_id)
        .where(
            Order.terminal_at.is_(None),  # the partial index's predicate
            Order.next_poll_at <= now,
            Order.provider.in_(providers),
            Order.status.not_in([s.value for s in TERMINAL]),
        )
        .order_by(Order.next_poll_at)
        .limit(limit)
    )


def _delivered(notification_ids: Sequence[int], now: datetime) -> Any:
    """The statement recording notifications as delivered (each once)."""
    return (
        update(Notification)
        .where(Notification.id.in_(notification_ids), Notification.delivered_at.is_(None))
        .values(delivered_at=now, next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )


def _pending() -> Any:
    """A notification neither delivered nor dead-lettered."""
    return and_(Notification.delivered_at.is_(None), Notification.dead_at.is_(None))


def _adopt_lock_id(key: tuple[str, str]) -> int:
    """An order key's advisory lock id under ``ADOPT_LOCKS``: its CRC-32, as a signed int4."""
    crc = zlib.crc32("\x1f".join(key).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _key_chunks(keys: Iterable[tuple[str, str]]) -> Iterable[tuple[str, Sequence[str]]]:
    """Order keys as ``(provider, up to KEYS_PER_STATEMENT of its order ids)``, in key
    order: for the statements that name a batch's orders."""
    by_provider: dict[str, list[str]] = {}
    for provider, external_id in keys:
        by_provider.setdefault(provider, []).append(external_id)
    for provider in sorted(by_provider):
        for chunk in _chunks(sorted(by_provider[provider]), KEYS_PER_STATEMENT):
            yield provider, chunk


def bare_order(provider: str, external_order_id: str, now: datetime) -> dict[str, Any]:
    """The columns of an order seen for the first time (adopted, or claimed for creation):
    CREATED since ``now``, due for a poll now."""
    return dict(
        provider=provider,
        external_order_id=external_order_id,
        status=Status.CREATED.value,
        rank=0,
        version=0,
        details={},
        poll_attempts=0,
        next_poll_at=now,
        created_at=now,
        updated_at=now,
        status_at=now,
    )


def notification(order: Order | _OrderRow, kind: str, now: datetime, **extra: Any) -> dict[str, Any]:
    """The outbox row (its columns) telling the partner of ``order`` as it stands now.

    The order's columns hold only what a signature or a verified answer covered
    (``orders.plan``), so the body carries nothing else (the API's order view
    shows the same fields). ``extra`` adds to ``data``."""
    data = {**order_head(order), **extra}
    body = {"type": kind, "timestamp": now.isoformat(), "data": data}
    return {
        "order_id": order.id,
        "kind": kind,
        "version": order.version,
        "body": json.dumps(body, separators=(",", ":")),
        "created_at": now,
        "attempts": 0,
        "next_attempt_at": now,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _span(seconds: float) -> str:
    """``2h 5m``, ``45m``, ``3d 4h``: a duration for people."""
    minutes = int(seconds // 60)
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (mins, "m")) if n]
    return " ".join(parts[:2]) or f"{int(seconds)}s"


def _observed(source: str, first: datetime, last: datetime | None) -> datetime:
    """When a recorded event was observed, for ``orders.plan``: an answer as of its
    latest fetch, anything else as of its first arrival."""
    if source in ANSWER_SOURCES and last is not None and last > first:
        return last
    return first


def _facts(order: Order | _OrderRow) -> OrderFacts:
    return OrderFacts(
        status=Status(order.status),
        rank=order.rank,
        provider_status=order.provider_status,
        version=order.version,
        provider_order_id=order.provider_order_id,
        kind=order.kind,
        fiat_amount=order.fiat_amount,
        fiat_currency=order.fiat_currency,
        crypto_amount=order.crypto_amount,
        crypto_currency=order.crypto_currency,
        details=dict(order.details or {}),
        poll_attempts=order.poll_attempts,
        next_poll_at=order.next_poll_at,
    )


def _storable(*texts: str) -> bool:
    """Whether the store could hold these ids at all: no NUL (PostgreSQL refuses one in
    any text) and no lone surrogate. A lookup of one that is not finds nothing,
    instead of failing a job or a request on one database and not the other."""
    return not any("\x00" in t or any("\ud800" <= c <= "\udfff" for c in t) for t in texts)
