"""The outbox: every change of canonical status, and nothing else, writes one notification,
in the transaction of the change, and the feed's ids follow the order of commits."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select, text

from config import PollPolicy
from orders.db import make_engine
from orders.events import COVERS_ALL, Event
from orders.models import Notification, Order
from orders.providers import STATUS_MAPS
from orders.states import Decision
from orders.store import FEED_LOCK, STATUS_CHANGED, Store


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(database_url: str, clock: Clock) -> Store:
    s = Store(make_engine(database_url), STATUS_MAPS, {"alixpay": PollPolicy(backoff=(10,))}, clock=clock)
    yield s
    s.engine.dispose()


def ev(status: str, order: str = "o-1", *, source: str = "callback", covers=COVERS_ALL, **kw) -> Event:
    return Event(
        provider="alixpay",
        external_order_id=order,
        provider_status=status,
        source=source,
        dedup_key=f"status:{status}",
        raw_body=json.dumps({"status": status, **kw}),
        received_at=kw.pop("received_at", datetime(2026, 1, 1, tzinfo=UTC).isoformat()),
        verified_by="ALIXPAY_PUBLIC_KEY",
        fiat_amount=kw.pop("amount", "100000"),
        covers=covers,
        **kw,
    )


def notifications(store: Store) -> list[Notification]:
    with store.sessions() as s:
        return list(s.scalars(select(Notification).order_by(Notification.id)))


def test_a_change_writes_one_notification_with_what_was_applied(store: Store, clock: Clock) -> None:
    (out,) = store.apply([ev("AWAITING_PAYMENT")])
    (n,) = notifications(store)
    assert out.changed and out.order_id == n.order_id
    assert (n.kind, n.version, n.attempts, n.next_attempt_at) == (STATUS_CHANGED, 1, 0, clock.now)
    assert n.delivered_at is None and n.dead_at is None
    body = json.loads(n.body)
    assert body["type"] == "order.status_changed"
    assert body["timestamp"] == clock.now.isoformat()
    data = body["data"]
    assert data["provider"] == "alixpay" and data["external_order_id"] == "o-1"
    assert (data["previous_status"], data["status"], data["version"]) == ("CREATED", "AWAITING_PAYMENT", 1)
    assert data["provider_status"] == "AWAITING_PAYMENT" and data["source"] == "callback"
    assert data["amounts"]["fiat_amount"] == "100000"
    assert data["terminal_at"] is None and data["created_at"] == clock.now.isoformat()


def test_refused_events_write_no_notification(store: Store, clock: Clock) -> None:
    store.apply([ev("PAYMENT_COMPLETED")])
    clock.now += timedelta(seconds=5)
    outs = store.apply(
        [
            ev("AWAITING_PAYMENT"),  # stale
            ev("PAYMENT_COMPLETED"),  # the same delivery again
            ev("PAYMENT_COMPLETED", source="poll"),  # a verified answer: where it already is
            ev("NOT_A_STATUS"),  # unknown
            # Another provider status of the same canonical state: written, but the
            # canonical status (what the partner is told of) did not change.
            ev("PROCESSING_TOKEN_TRANSFER"),
        ]
    )
    assert [o.decision for o in outs] == [
        Decision.STALE,
        Decision.DUPLICATE,
        Decision.CONFIRMED,
        Decision.UNKNOWN_STATUS,
        Decision.APPLIED,
    ]
    assert not any(o.changed for o in outs)
    assert len(notifications(store)) == 1


def test_an_unsigned_claim_is_not_told(store: Store) -> None:
    (out,) = store.apply([ev("SUCCESS", covers=("fiat_amount",))])
    assert not out.changed
    assert notifications(store) == []


def test_several_changes_in_one_batch_are_told_in_version_order(store: Store) -> None:
    outs = store.apply(
        [ev("AWAITING_PAYMENT"), ev("PAYMENT_COMPLETED"), ev("SUCCESS"), ev("AWAITING_PAYMENT", "o-2")]
    )
    assert [o.changed for o in outs] == [True, True, True, True]
    told = notifications(store)
    mine = [
        json.loads(n.body)["data"] for n in told if json.loads(n.body)["data"]["external_order_id"] == "o-1"
    ]
    assert [(d["previous_status"], d["status"], d["version"]) for d in mine] == [
        ("CREATED", "AWAITING_PAYMENT", 1),
        ("AWAITING_PAYMENT", "PROCESSING", 2),
        ("PROCESSING", "SUCCESS", 3),
    ]
    assert mine[-1]["terminal_at"] is not None
    assert [n.id for n in told] == sorted(n.id for n in told)


def test_a_change_clears_the_stuck_flag(store: Store, clock: Clock) -> None:
    store.apply([ev("AWAITING_PAYMENT")])
    with store.sessions.begin() as s:
        order = s.scalars(select(Order)).one()
        order.stuck_at, order.stuck_reason = clock.now, "no callback since"
    store.apply([ev("PAYMENT_COMPLETED")])
    with store.sessions() as s:
        order = s.scalars(select(Order)).one()
    assert order.stuck_at is None and order.stuck_reason is None


def test_a_failed_transaction_leaves_neither_change_nor_notification(store: Store) -> None:
    store.apply([ev("AWAITING_PAYMENT")])

    def crash(session) -> None:
        raise RuntimeError("the process died before the commit")

    sa_event.listen(store.sessions, "before_commit", crash)
    try:
        with pytest.raises(RuntimeError):
            store.apply([ev("SUCCESS")])
    finally:
        sa_event.remove(store.sessions, "before_commit", crash)
    assert store.order_view("alixpay", "o-1").status == "AWAITING_PAYMENT"
    assert [n.version for n in notifications(store)] == [1]
    (out,) = store.apply([ev("SUCCESS")])  # retried: applied and told once
    assert out.changed and [n.version for n in notifications(store)] == [1, 2]


def test_notification_writers_commit_in_id_order(store: Store, database_url: str) -> None:
    """A writer of notifications cannot commit while another holds the feed's lock (on
    PostgreSQL the advisory FEED_LOCK, taken from the insert to the commit; on SQLite
    the database's one write lock), so no id becomes visible after a greater one: a
    feed reader paging by id skips nothing."""
    postgres = database_url.startswith("postgresql")
    holder = make_engine(database_url)
    done = threading.Event()
    try:
        with holder.connect() as conn:
            if postgres:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": FEED_LOCK})
            else:
                conn.execute(text("SELECT 1"))  # in the engine's BEGIN IMMEDIATE: the write lock
            t = threading.Thread(target=lambda: (store.apply([ev("AWAITING_PAYMENT")]), done.set()))
            t.start()
            assert not done.wait(0.5), "a notification was committed while another writer held the lock"
            if postgres:
                store.apply([ev("NOT_A_STATUS", "o-2")])  # writes no notification: not held up
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": FEED_LOCK})
            conn.commit()
            assert done.wait(10)
            t.join(10)
    finally:
        holder.dispose()
    assert [n.version for n in notifications(store)] == [1]
