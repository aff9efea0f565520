"""What the console reads beyond the API's readers (``orders.queries``): counts of orders by
status, stuck orders oldest first, the last hour's activity per minute, queue depths,
and raw bodies with personal data masked.

Every query takes the store on the read-only engine and is bounded for a large store:
the counts read the (provider, status) index, the stuck list pages by id, and the
activity reads only the events of the last hour, found by id (the events table has
no index on its times, and its ids grow with them: a binary search over the primary
key finds the first event of the hour in about twenty lookups).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis import Redis
from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from config.logs import mask, mask_data
from orders.models import Anomaly, EventRecord, Order
from orders.queries import OrderRow, Page
from orders.states import Status
from orders.store import Store

# Ids of events whose clocks disagree by less than this are found by the binary search.
CLOCK_SLACK = timedelta(minutes=5)
ACTIVITY_SERIES = ("callbacks", "transitions", "polls")

# JSON keys whose values are personal whatever their shape (names cannot be recognised by
# shape, unlike the e-mails, phones and account numbers ``config.logs.mask`` finds).
PERSONAL_KEY = re.compile(
    r"(?i)^(?:(?:first|last|middle|full|given|family|sur|account|holder|customer|payer|payee|"
    r"seller|buyer|bank_?account|card_?holder|beneficiary)_?name|name|e_?mail|.*email|.*phone|"
    r".*account_?(?:number|no)|iban|card(?:_?number)?|birth_?date|date_?of_?birth|dob|address|"
    r"document_?(?:number|id)|passport|national_?id|tax_?id)$"
)
MASKED = "***"


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


def queue_depths(redis: Redis) -> list[dict[str, Any]]:
    """Each RQ queue's queued, started, scheduled and failed jobs, in a worker's order."""
    from workers.queue import Queues

    out = []
    for q in Queues(redis).all():
        out.append(
            {
                "name": q.name,
                "queued": q.count,
                "started": q.started_job_registry.count,
                "scheduled": q.scheduled_job_registry.count,
                "failed": q.failed_job_registry.count,
            }
        )
    return out


def stream_depths(redis: Redis) -> dict[str, int] | None:
    """The callback stream's depths, or None where this release has no stream."""
    try:
        from workers.stream import stream_depths as depths
    except ImportError:
        return None
    return dict(depths(redis))


def masked_body(raw: str) -> str:
    """A raw body for the console: personal data masked. JSON is shown indented, values
    under personal keys (names, e-mails, phones, accounts, addresses) replaced and every
    other string masked as the logs mask them (``config.logs.mask``); any other text is
    masked as the logs mask it."""
    try:
        data = json.loads(raw)
    except ValueError:
        return mask(raw)
    return json.dumps(_mask_keys(data), indent=2, ensure_ascii=False, sort_keys=False)


def _mask_keys(value: Any, depth: int = 0) -> Any:
    if depth > 20:
        return MASKED
    if isinstance(value, Mapping):
        return {
            k: (_hide(v) if PERSONAL_KEY.match(str(k)) else _mask_keys(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask_keys(v, depth + 1) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**7:
        return mask(str(value))  # an account number sent as a JSON number
    return mask_data(value)


def _hide(value: Any) -> Any:
    if value is None or value == "" or isinstance(value, bool):
        return value
    if isinstance(value, Mapping):
        return {k: MASKED for k in value}
    if isinstance(value, list):
        return [_hide(v) for v in value]
    return MASKED
