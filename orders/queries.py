"""The readers behind the API's lists and the CLI: orders by filter, anomalies, the
events feed, the outbox's notifications, the ledger export.

Each takes a ``Store`` (the web app passes the one on the read-only engine,
``orders.db.reading``: no reader waits for a writer's lock) and pages by id, a
keyset: orders and anomalies newest first (``before`` the last id seen), the
events feed oldest first (``after`` the last id seen). A page is one query of
``limit + 1`` rows, the extra row only saying whether there is more. What a
cursor looks like is the caller's business; here it is an id. The ledger
(``ledger``) is streamed instead: one server-side cursor, rows fetched in batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.orm import Session

from orders.models import Anomaly, EventRecord, Notification, Order
from orders.states import TERMINAL, Status
from orders.store import Store

__all__ = [
    "AnomalyFilters",
    "NotificationFilters",
    "NotificationRow",
    "OrderFilters",
    "Page",
    "anomalies",
    "count_ledger",
    "events_after",
    "ledger",
    "notifications",
    "order_notifications",
    "orders",
    "orders_created",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    more: bool  # another page follows the last item


@dataclass(frozen=True)
class OrderFilters:
    provider: str | None = None
    statuses: Sequence[str] = ()
    updated_since: datetime | None = None
    open_longer_than: timedelta | None = None  # open (not terminal) and created longer ago
    stuck: bool | None = None  # Order.stuck_at set (True) or not (False)
    has_open_anomalies: bool | None = None


@dataclass(frozen=True)
class AnomalyFilters:
    resolved: bool | None = None  # None: both
    kind: str | None = None
    provider: str | None = None


@dataclass(frozen=True)
class OrderRow:
    order: Order
    open_anomalies: int


@dataclass(frozen=True)
class AnomalyRow:
    anomaly: Anomaly
    provider: str
    external_order_id: str


def _open_anomalies_of_order() -> Select[tuple[int]]:
    return select(Anomaly.id).where(Anomaly.order_id == Order.id, Anomaly.resolved_at.is_(None))


def orders(store: Store, filters: OrderFilters, *, before: int | None, limit: int) -> Page[OrderRow]:
    """Orders matching every filter, newest (highest id) first, with their open anomalies counted."""
    count = (
        select(func.count(Anomaly.id))
        .where(Anomaly.order_id == Order.id, Anomaly.resolved_at.is_(None))
        .scalar_subquery()
    )
    stmt = select(Order, count).order_by(Order.id.desc()).limit(limit + 1)
    if before is not None:
        stmt = stmt.where(Order.id < before)
    if filters.provider:
        stmt = stmt.where(Order.provider == filters.provider)
    if filters.statuses:
        stmt = stmt.where(Order.status.in_(list(filters.statuses)))
    if filters.updated_since is not None:
        stmt = stmt.where(Order.updated_at >= filters.updated_since)
    if filters.open_longer_than is not None:
        stmt = stmt.where(
            Order.status.not_in([s.value for s in TERMINAL]),
            Order.created_at <= store.clock() - filters.open_longer_than,
        )
    if filters.stuck is not None:
        stmt = stmt.where(Order.stuck_at.is_not(None) if filters.stuck else Order.stuck_at.is_(None))
    if filters.has_open_anomalies is not None:
        has = _open_anomalies_of_order().exists()
        stmt = stmt.where(has if filters.has_open_anomalies else ~has)
    with store.sessions() as session:
        rows = session.execute(stmt).all()
    items = [OrderRow(order, int(n or 0)) for order, n in rows[:limit]]
    return Page(items, more=len(rows) > limit)


def anomalies(store: Store, filters: AnomalyFilters, *, before: int | None, limit: int) -> Page[AnomalyRow]:
    """Anomalies matching every filter, newest first, with the order each is about."""
    stmt = (
        select(Anomaly, Order.provider, Order.external_order_id)
        .join(Order, Order.id == Anomaly.order_id)
        .order_by(Anomaly.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        stmt = stmt.where(Anomaly.id < before)
    if filters.resolved is not None:
        stmt = stmt.where(
            Anomaly.resolved_at.is_not(None) if filters.resolved else Anomaly.resolved_at.is_(None)
        )
    if filters.kind:
        stmt = stmt.where(Anomaly.kind == filters.kind)
    if filters.provider:
        stmt = stmt.where(Order.provider == filters.provider)
    with store.sessions() as session:
        rows = session.execute(stmt).all()
    items = [AnomalyRow(a, provider, oid) for a, provider, oid in rows[:limit]]
    return Page(items, more=len(rows) > limit)


def events_after(store: Store, after: int, limit: int) -> Page[Notification]:
    """Outbox notifications with an id above ``after``, in id order (the order they
    committed in: the writer assigns ids so)."""
    stmt = select(Notification).where(Notification.id > after).order_by(Notification.id).limit(limit + 1)
    with store.sessions() as session:
        rows = list(session.scalars(stmt).all())
    return Page(rows[:limit], more=len(rows) > limit)


@dataclass(frozen=True)
class NotificationFilters:
    failed: bool = False  # only those not delivered that failed an attempt or are dead
    provider: str | None = None
    external_order_id: str | None = None  # with ``provider``: one order's


@dataclass(frozen=True)
class NotificationRow:
    notification: Notification
    provider: str
    external_order_id: str


def notifications(
    store: Store, filters: NotificationFilters, *, before: int | None, limit: int
) -> Page[NotificationRow]:
    """Outbox notifications matching every filter, newest first, with the order each tells of."""
    stmt = (
        select(Notification, Order.provider, Order.external_order_id)
        .join(Order, Order.id == Notification.order_id)
        .order_by(Notification.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        stmt = stmt.where(Notification.id < before)
    if filters.failed:
        stmt = stmt.where(
            Notification.delivered_at.is_(None),
            Notification.dead_at.is_not(None) | Notification.last_error.is_not(None),
        )
    if filters.provider:
        stmt = stmt.where(Order.provider == filters.provider)
    if filters.external_order_id is not None:
        stmt = stmt.where(Order.external_order_id == filters.external_order_id)
    with store.sessions() as session:
        rows = session.execute(stmt).all()
    items = [NotificationRow(n, provider, oid) for n, provider, oid in rows[:limit]]
    return Page(items, more=len(rows) > limit)


def order_notifications(store: Store, order_id: int) -> list[Notification]:
    """One order's notifications, oldest (lowest version) first: its delivery order."""
    stmt = select(Notification).where(Notification.order_id == order_id).order_by(Notification.id)
    with store.sessions() as session:
        return list(session.scalars(stmt).all())


def orders_created(
    store: Store,
    *,
    provider: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    open_only: bool = True,
) -> list[tuple[str, str]]:
    """(provider, external order id) of the orders created in ``[since, until)``, oldest
    first; open ones only unless told."""
    stmt = select(Order.provider, Order.external_order_id).order_by(Order.id)
    if open_only:
        stmt = stmt.where(Order.status.not_in([s.value for s in TERMINAL]))
    stmt = _created_between(stmt, provider, since, until)
    with store.sessions() as session:
        return [(p, e) for p, e in session.execute(stmt).all()]


def _created_between(
    stmt: Select[Any], provider: str | None, since: datetime | None, until: datetime | None
) -> Select[Any]:
    if provider:
        stmt = stmt.where(Order.provider == provider)
    if since is not None:
        stmt = stmt.where(Order.created_at >= since)
    if until is not None:
        stmt = stmt.where(Order.created_at < until)
    return stmt


def count_ledger(
    store: Store, *, since: datetime | None, until: datetime | None, provider: str | None = None
) -> int:
    """How many orders ``ledger`` yields for the same range."""
    stmt = _created_between(select(func.count(Order.id)), provider, since, until)
    with store.sessions() as session:
        return int(session.scalar(stmt) or 0)


def ledger(
    store: Store,
    *,
    since: datetime | None,
    until: datetime | None,
    provider: str | None = None,
    batch: int = 500,
) -> Iterator[Order]:
    """Every order created in ``[since, until)``, oldest first, streamed: a server-side
    cursor (PostgreSQL) fetched ``batch`` rows at a time, never the whole range in memory.
    The orders are detached: read their columns only."""
    stmt = _created_between(select(Order).order_by(Order.id), provider, since, until)
    with store.sessions() as session:
        result = session.execute(stmt.execution_options(yield_per=batch, stream_results=True))
        yield from result.scalars()


# ------------------------------------------------------------------ the operator console
# Bounded for a large store: the counts read the (provider, status) index, the stuck list
# pages by id, and the activity reads only the events of the last hour, found by id (the
# events table has no index on its times, and its ids grow with them: a binary search over
# the primary key finds the first event of the hour in about twenty lookups).

# Ids of events whose clocks disagree by less than this are found by the binary search.
CLOCK_SLACK = timedelta(minutes=5)
ACTIVITY_SERIES = ("callbacks", "transitions", "polls")


def status_counts(store: Store, provider: str | None = None) -> dict[str, int]:
    """How many orders are in each canonical status (every status listed, zero or not)."""
    stmt = select(Order.status, func.count()).group_by(Order.status)
    if provider:
        stmt = stmt.where(Order.provider == provider)
    with store.sessions() as session:
        found = {status: int(n) for status, n in session.execute(stmt).all()}
    return {s.value: found.get(s.value, 0) for s in Status}


def stuck_orders(store: Store, *, after: int | None, limit: int) -> Page[OrderRow]:
    """Orders flagged stuck, oldest (lowest id) first, with their open anomalies counted;
    ``after`` the last id of the previous page."""
    count = (
        select(func.count(Anomaly.id))
        .where(Anomaly.order_id == Order.id, Anomaly.resolved_at.is_(None))
        .scalar_subquery()
    )
    stmt = select(Order, count).where(Order.stuck_at.is_not(None)).order_by(Order.id).limit(limit + 1)
    if after is not None:
        stmt = stmt.where(Order.id > after)
    with store.sessions() as session:
        rows = session.execute(stmt).all()
    return Page([OrderRow(o, int(n or 0)) for o, n in rows[:limit]], more=len(rows) > limit)


@dataclass(frozen=True)
class Activity:
    minutes: list[datetime]  # the first minute of each bucket, oldest first
    series: dict[str, list[int]]  # ACTIVITY_SERIES -> one count per minute

    @property
    def totals(self) -> dict[str, int]:
        return {name: sum(counts) for name, counts in self.series.items()}

    @property
    def peak(self) -> int:
        return max((max(c) for c in self.series.values() if c), default=0)


def activity(store: Store, now: datetime, minutes: int = 60) -> Activity:
    """Callbacks received, status transitions and polls recorded, per minute, over the last
    ``minutes`` minutes up to ``now``."""
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    buckets = [start + timedelta(minutes=i) for i in range(minutes)]
    series = {name: [0] * minutes for name in ACTIVITY_SERIES}
    transition = and_(EventRecord.decision == "applied", EventRecord.from_status != EventRecord.to_status)
    with store.sessions() as session:
        first = _first_event_id_since(session, start - CLOCK_SLACK)
        if first is None:
            return Activity(buckets, series)
        stmt = (
            select(
                EventRecord.recorded_at,
                EventRecord.source,
                case((transition, 1), else_=0),
            )
            .where(EventRecord.id >= first, EventRecord.recorded_at >= start)
            .execution_options(yield_per=2000)
        )
        for recorded_at, source, moved in session.execute(stmt):
            i = int((recorded_at - start).total_seconds() // 60)
            if not 0 <= i < minutes:
                continue
            if source == "callback":
                series["callbacks"][i] += 1
            elif source == "poll":
                series["polls"][i] += 1
            if moved:
                series["transitions"][i] += 1
    return Activity(buckets, series)


def _first_event_id_since(session: Session, since: datetime) -> int | None:
    """The lowest event id recorded at or after ``since`` (ids grow with recording times,
    up to ``CLOCK_SLACK`` between writers), or None when there is none."""
    low, high = session.execute(select(func.min(EventRecord.id), func.max(EventRecord.id))).one()
    if high is None:
        return None
    last_at = session.scalar(select(EventRecord.recorded_at).where(EventRecord.id == high))
    if last_at is None or last_at < since:
        return None
    while low < high:
        mid = (low + high) // 2
        at = session.scalar(
            select(EventRecord.recorded_at).where(EventRecord.id >= mid).order_by(EventRecord.id).limit(1)
        )
        if at is None or at >= since:
            high = mid
        else:
            low = mid + 1
    return low
