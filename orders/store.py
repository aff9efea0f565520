"""The order store and its one writer, ``Store.apply``.

``apply`` takes a batch of events and, in one transaction, for each order in a
fixed order (so two batches never deadlock): takes the order's row lock
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` write
lock), adopts the order if it has never been seen, records every event with its
decision, writes state, version and the next poll time, and raises anomalies.
Callbacks, polls, creation and manual replays all come through here.

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
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from config import PollPolicy
from orders.db import make_sessionmaker
from orders.errors import BadEventPayload
from orders.events import Event, utcnow
from orders.models import Anomaly, EventRecord, Order
from orders.states import TERMINAL, Decision, Mapped, OrderPosition, Status, StatusMap, decide

Clock = Callable[[], datetime]

# Details worth keeping on the order row; personal data (bank accounts, e-mails,
# phones) stays in the raw bodies of the event history only.
KEPT_DETAILS = frozenset(
    {
        "tx_hash",
        "wallet_address",
        "network",
        "description",
        "expires_at",
        "provider_created_at",
        "paid_amount",
        "redirect_url",
        "fiat_payment_status",
        "crypto_payment_status",
        "payout_status",
        "kyc_error_type",
        "claimed_status",
    }
)


class AnomalyKind:
    AMOUNT_MISMATCH = "amount_mismatch"
    CONFLICT = "conflict"
    UNKNOWN_STATUS = "unknown_status"
    STALE = "stale"


@dataclass(frozen=True)
class Outcome:
    """What ``apply`` did with one event."""

    event: Event
    decision: Decision
    status: Status
    version: int
    changed: bool
    anomalies: tuple[str, ...] = ()


@dataclass(frozen=True)
class DueOrder:
    provider: str
    external_order_id: str


@dataclass
class _OrderWork:
    order: Order
    applied_keys: set[str] = field(default_factory=set)
    created: bool = False


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
        """Apply ``events`` in one transaction; outcomes come back in input order."""
        if not events:
            return []
        for ev in events:
            if not ev.external_order_id:
                # Resolve first (workers.jobs does, by the provider's order id): an
                # order filed under "" would collect every unresolved event.
                raise BadEventPayload(f"{ev.provider} {ev.source} event has no external_order_id")
        now = self.clock()
        by_order: dict[tuple[str, str], list[int]] = {}
        for i, ev in enumerate(events):
            by_order.setdefault(ev.order_key, []).append(i)
        outcomes: list[Outcome | None] = [None] * len(events)
        with self.sessions.begin() as session:
            for key in sorted(by_order):
                work = self._lock_or_adopt(session, events[by_order[key][0]], now)
                for i in by_order[key]:
                    outcomes[i] = self._apply_one(session, work, events[i], now)
        return [o for o in outcomes if o is not None]

    def _lock_or_adopt(self, session: Session, ev: Event, now: datetime) -> _OrderWork:
        provider, external_id = ev.order_key
        order = self._locked(session, provider, external_id)
        created = False
        if order is None:
            values = dict(
                provider=provider,
                external_order_id=external_id,
                provider_order_id=ev.provider_order_id,
                kind=ev.kind,
                status=Status.CREATED.value,
                rank=0,
                version=0,
                fiat_amount=ev.fiat_amount,
                fiat_currency=ev.fiat_currency,
                crypto_amount=ev.crypto_amount,
                crypto_currency=ev.crypto_currency,
                details={},
                poll_attempts=0,
                next_poll_at=now,
                created_at=now,
                updated_at=now,
            )
            dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite  # type: ignore[union-attr]
            stmt = dialect.insert(Order).values(**values)
            stmt = stmt.on_conflict_do_nothing(index_elements=["provider", "external_order_id"])
            result = session.execute(stmt)
            created = result.rowcount == 1
            order = self._locked(session, provider, external_id)
            assert order is not None
        applied = session.scalars(
            select(EventRecord.dedup_key).where(
                EventRecord.order_id == order.id, EventRecord.decision == Decision.APPLIED.value
            )
        )
        return _OrderWork(order=order, applied_keys=set(applied), created=created)

    @staticmethod
    def _locked(session: Session, provider: str, external_id: str) -> Order | None:
        stmt = select(Order).where(Order.provider == provider, Order.external_order_id == external_id)
        if session.bind.dialect.name != "sqlite":  # type: ignore[union-attr]
            stmt = stmt.with_for_update()
        return session.scalars(stmt).one_or_none()

    def _apply_one(self, session: Session, work: _OrderWork, ev: Event, now: datetime) -> Outcome:
        order = work.order
        current = Status(order.status)
        anomalies: list[tuple[str, dict[str, Any]]] = []

        if ev.provider_status is None:
            # A creation (or the provider's answer to it) records the order and its ids;
            # a callback without a trusted status (a trigger) is only kept for the history.
            mapped: Mapped | None = Mapped(current, order.rank)
            if ev.source == "callback":
                decision = Decision.RECORDED
            else:
                decision = Decision.APPLIED if ev.dedup_key not in work.applied_keys else Decision.DUPLICATE
            state_change = False
        else:
            mapped = self.status_maps[ev.provider].lookup(ev.provider_status)
            decision = decide(
                OrderPosition(current, order.rank),
                mapped,
                already_applied=ev.dedup_key in work.applied_keys,
                source=ev.source,
            )
            state_change = decision is Decision.APPLIED
        if decision is Decision.UNKNOWN_STATUS:
            anomalies.append((AnomalyKind.UNKNOWN_STATUS, {"provider_status": ev.provider_status}))
        elif decision is Decision.CONFLICT:
            anomalies.append(
                (
                    AnomalyKind.CONFLICT,
                    {
                        "status": current.value,
                        "incoming": mapped.status.value if mapped else None,
                        "provider_status": ev.provider_status,
                    },
                )
            )

        if ev.fiat_amount is not None:
            if order.fiat_amount is None:
                order.fiat_amount = ev.fiat_amount
            elif Decimal(order.fiat_amount) != Decimal(ev.fiat_amount):
                anomalies.append(
                    (AnomalyKind.AMOUNT_MISMATCH, {"order": order.fiat_amount, "event": ev.fiat_amount})
                )
        self._fill_blanks(order, ev)

        before = current
        if state_change:
            assert mapped is not None
            order.status = mapped.status.value
            order.rank = mapped.rank
            order.provider_status = ev.provider_status
            order.version += 1
            order.updated_at = now
            order.poll_attempts = 0
            if mapped.status in TERMINAL:
                order.terminal_at = now
                order.next_poll_at = None
            else:
                order.next_poll_at = now + timedelta(seconds=self._policy(ev.provider).delay(0))
        elif decision is Decision.APPLIED:
            order.version += 1
            order.updated_at = now
        if ev.source == "poll":
            order.last_polled_at = now
            if not state_change and Status(order.status) not in TERMINAL:
                order.poll_attempts += 1
                delay = self._policy(ev.provider).delay(order.poll_attempts)
                order.next_poll_at = now + timedelta(seconds=delay)
        if Status(order.status) not in TERMINAL and order.next_poll_at is None:
            order.next_poll_at = now

        dedup_key = ev.dedup_key
        if decision is Decision.APPLIED and dedup_key in work.applied_keys:
            # A poll resuming a held order reports a status applied before the hold:
            # record it under its own key so "one applied event per key" still holds.
            dedup_key = f"{ev.dedup_key}@v{order.version}"
        record = EventRecord(
            order_id=order.id,
            provider=ev.provider,
            source=ev.source,
            dedup_key=dedup_key,
            fingerprint=ev.fingerprint(),
            provider_status=ev.provider_status,
            canonical_status=mapped.status.value if mapped and ev.provider_status is not None else None,
            decision=decision.value,
            from_status=before.value,
            to_status=order.status,
            version_after=order.version,
            verified_by=ev.verified_by,
            fiat_amount=ev.fiat_amount,
            raw_body=ev.raw_body,
            received_at=ev.received,
            recorded_at=now,
        )
        session.add(record)
        if decision is Decision.APPLIED:
            work.applied_keys.add(ev.dedup_key)
        if anomalies:
            session.flush()  # the anomaly rows need the event's id; otherwise inserts batch at commit
        for kind, detail in anomalies:
            session.add(
                Anomaly(
                    order_id=order.id,
                    event_id=record.id,
                    kind=kind,
                    detail=json.dumps(detail, sort_keys=True),
                    created_at=now,
                )
            )
        return Outcome(
            event=ev,
            decision=decision,
            status=Status(order.status),
            version=order.version,
            changed=state_change,
            anomalies=tuple(kind for kind, _ in anomalies),
        )

    @staticmethod
    def _fill_blanks(order: Order, ev: Event) -> None:
        for attr in ("provider_order_id", "kind", "fiat_currency", "crypto_amount", "crypto_currency"):
            value = getattr(ev, attr)
            if value is not None and getattr(order, attr) is None:
                setattr(order, attr, value)
        kept = {k: v for k, v in ev.details.items() if k in KEPT_DETAILS and v not in (None, "")}
        if kept:
            order.details = {**(order.details or {}), **kept}

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
        with self.sessions() as session:
            row = session.execute(
                select(Order.kind, Order.provider_order_id).where(
                    Order.provider == provider, Order.external_order_id == external_order_id
                )
            ).one_or_none()
            return (row.kind, row.provider_order_id) if row else None

    def external_id_for(self, provider: str, provider_order_id: str) -> str | None:
        """Our order id for the provider's own order id, if we know the order."""
        with self.sessions() as session:
            return session.scalars(
                select(Order.external_order_id)
                .where(Order.provider == provider, Order.provider_order_id == provider_order_id)
                .limit(1)
            ).first()

    def exists(self, provider: str, external_order_id: str) -> bool:
        with self.sessions() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(Order)
                    .where(and_(Order.provider == provider, Order.external_order_id == external_order_id))
                )
                or 0
            ) > 0
