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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from config import PollPolicy
from orders.db import make_sessionmaker
from orders.errors import BadEventPayload, ProviderDisabled
from orders.events import ANSWER_SOURCES, Event, utcnow
from orders.models import Anomaly, EventRecord, Order
from orders.plan import AnomalyKind, Observation, OrderFacts, Plan, plan, remember
from orders.states import TERMINAL, Decision, Status, StatusMap

__all__ = ["AnomalyKind", "DueOrder", "Outcome", "Store"]

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Outcome:
    """What ``apply`` did with one event."""

    event: Event
    decision: Decision
    status: Status
    version: int
    changed: bool  # the canonical status changed
    anomalies: tuple[str, ...] = ()
    replayed: bool = False  # the same delivery again: counted on its record


@dataclass(frozen=True)
class DueOrder:
    provider: str
    external_order_id: str


@dataclass
class _OrderWork:
    order: Order
    history: list[Observation] = field(default_factory=list)
    # records added in this batch, by fingerprint (they have no id before the flush)
    pending: dict[str, EventRecord] = field(default_factory=dict)


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

    # ------------------------------------------------------------------ writer

    def apply(self, events: Sequence[Event]) -> list[Outcome]:
        """Apply ``events`` in one transaction; outcomes come back in input order.

        Raises ``BadEventPayload`` for an event filed under no order and
        ``ProviderDisabled`` for a provider this store has no status map for,
        before anything is written."""
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
        with self.sessions.begin() as session:
            for key in sorted(by_order):
                work = self._lock_or_adopt(session, key, now)
                for i in by_order[key]:
                    outcomes[i] = self._apply_one(session, work, events[i], now)
        return [o for o in outcomes if o is not None]

    def _lock_or_adopt(self, session: Session, key: tuple[str, str], now: datetime) -> _OrderWork:
        provider, external_id = key
        order = self._locked(session, provider, external_id)
        if order is None:
            # Adoption: a bare order; the event's plan decides what of it to write.
            values = dict(
                provider=provider,
                external_order_id=external_id,
                status=Status.CREATED.value,
                rank=0,
                version=0,
                details={},
                poll_attempts=0,
                next_poll_at=now,
                created_at=now,
                updated_at=now,
            )
            dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite  # type: ignore[union-attr]
            stmt = dialect.insert(Order).values(**values)
            stmt = stmt.on_conflict_do_nothing(index_elements=["provider", "external_order_id"])
            session.execute(stmt)
            order = self._locked(session, provider, external_id)
            assert order is not None
        rows = session.execute(
            select(
                EventRecord.id,
                EventRecord.source,
                EventRecord.provider_status,
                EventRecord.dedup_key,
                EventRecord.fingerprint,
                EventRecord.decision,
                EventRecord.observed_at,
                EventRecord.received_at,
                EventRecord.last_seen_at,
            )
            .where(EventRecord.order_id == order.id)
            .order_by(EventRecord.id)
        )
        history = [
            Observation(
                source=r.source,
                provider_status=r.provider_status,
                dedup_key=r.dedup_key,
                fingerprint=r.fingerprint,
                decision=r.decision,
                at=_observed(r.source, r.observed_at or r.received_at, r.last_seen_at),
                record_id=r.id,
            )
            for r in rows
        ]
        return _OrderWork(order=order, history=history)

    @staticmethod
    def _locked(session: Session, provider: str, external_id: str) -> Order | None:
        stmt = select(Order).where(Order.provider == provider, Order.external_order_id == external_id)
        if session.bind.dialect.name != "sqlite":  # type: ignore[union-attr]
            stmt = stmt.with_for_update()
        return session.scalars(stmt).one_or_none()

    def _apply_one(self, session: Session, work: _OrderWork, ev: Event, now: datetime) -> Outcome:
        order = work.order
        decided = plan(
            _facts(order), work.history, ev, self.status_maps[ev.provider], self._policy(ev.provider), now
        )
        for name, value in decided.changes.items():
            setattr(order, name, value)
        work.history = remember(work.history, ev, decided)
        if decided.replay_of is not None:
            self._count_replay(session, work, decided, ev)
            return self._outcome(ev, decided, replayed=True)
        covered = ev.covered("provider_status")
        record = EventRecord(
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
        session.add(record)
        work.pending[record.fingerprint] = record
        if decided.anomalies:
            session.flush()  # the anomaly rows need the event's id; otherwise inserts batch at commit
        for kind, detail in decided.anomalies:
            session.add(
                Anomaly(
                    order_id=order.id,
                    event_id=record.id,
                    kind=kind,
                    detail=json.dumps(detail, sort_keys=True),
                    created_at=now,
                )
            )
        return self._outcome(ev, decided)

    @staticmethod
    def _count_replay(session: Session, work: _OrderWork, decided: Plan, ev: Event) -> None:
        seen = decided.replay_of
        assert seen is not None
        # An answer fetched again is newer evidence of the same state; a callback
        # delivered again is not: it keeps the time it first arrived.
        record = work.pending.get(seen.fingerprint) if seen.record_id is None else None
        if record is None:
            record = session.get(EventRecord, seen.record_id)
            assert record is not None
        record.seen_count += 1
        last = record.last_seen_at or record.received_at
        record.last_seen_at = max(last, ev.observed)

    @staticmethod
    def _outcome(ev: Event, decided: Plan, *, replayed: bool = False) -> Outcome:
        return Outcome(
            event=ev,
            decision=decided.decision,
            status=decided.after,
            version=decided.version,
            changed=decided.changed,
            anomalies=tuple(kind for kind, _ in decided.anomalies),
            replayed=replayed,
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
            stmt = (
                select(Order.id, Order.provider, Order.external_order_id)
                .where(
                    Order.next_poll_at <= now,
                    Order.provider.in_(providers),
                    Order.status.not_in([s.value for s in TERMINAL]),
                )
                .order_by(Order.next_poll_at)
                .limit(limit)
            )
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
            order = self._locked(session, provider, external_order_id)
            if order is None or Status(order.status) in TERMINAL:
                return
            order.poll_attempts += 1
            order.last_polled_at = now
            delay = self._policy(provider).delay(order.poll_attempts)
            order.next_poll_at = now + timedelta(seconds=delay)

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
                        Order.provider == provider,
                        Order.created_at < horizon,
                        Order.stale_flagged_at.is_(None),
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


def _observed(source: str, first: datetime, last: datetime | None) -> datetime:
    """When a recorded event was observed, for ``orders.plan``: an answer as of its
    latest fetch, anything else as of its first arrival."""
    if source in ANSWER_SOURCES and last is not None and last > first:
        return last
    return first


def _facts(order: Order) -> OrderFacts:
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
