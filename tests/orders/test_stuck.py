"""Stuck orders: past the expected time of their provider and state, flagged once with the
reason, told to the partner once (``order.stuck``), cleared by the next change of state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from config import PollPolicy, stuck_times
from orders.db import make_engine
from orders.events import COVERS_ALL, Event
from orders.models import Notification, Order
from orders.providers import STATUS_MAPS
from orders.store import STUCK, Store

HOUR = 3600


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(database_url: str, clock: Clock) -> Store:
    policy = PollPolicy(backoff=(10,), stuck_after=stuck_times(AWAITING_PAYMENT=HOUR, PROCESSING=2 * HOUR))
    s = Store(make_engine(database_url), STATUS_MAPS, {"alixpay": policy}, clock=clock)
    yield s
    s.engine.dispose()


def ev(status: str, order: str = "o-1", *, source: str = "callback", at: datetime | None = None) -> Event:
    return Event(
        provider="alixpay",
        external_order_id=order,
        provider_status=status,
        source=source,
        dedup_key=f"status:{status}",
        raw_body=json.dumps({"status": status}),
        received_at=(at or datetime(2026, 1, 1, tzinfo=UTC)).isoformat(),
        fetched_at=(at.isoformat() if at and source == "poll" else None),
        verified_by="ALIXPAY_PUBLIC_KEY",
        fiat_amount="100000",
        covers=COVERS_ALL,
    )


def stuck_notices(store: Store) -> list[dict]:
    with store.sessions() as s:
        rows = s.scalars(select(Notification).where(Notification.kind == STUCK).order_by(Notification.id))
        return [json.loads(n.body) for n in rows]


def order(store: Store, external_id: str = "o-1") -> Order:
    with store.sessions() as s:
        return s.scalars(select(Order).where(Order.external_order_id == external_id)).one()


def test_an_order_past_its_expected_time_is_flagged_and_told_once(store: Store, clock: Clock) -> None:
    store.apply([ev("AWAITING_PAYMENT", at=clock.now)])
    clock.advance(HOUR - 1)
    assert store.flag_stuck() == []
    assert order(store).stuck_at is None
    clock.advance(2)
    (flagged,) = store.flag_stuck()
    assert (flagged.provider, flagged.external_order_id) == ("alixpay", "o-1")
    o = order(store)
    assert o.stuck_at == clock.now
    assert o.stuck_reason.startswith("AWAITING_PAYMENT for 1h (expected 1h): no callback since 2026-01-01")
    clock.advance(HOUR)
    assert store.flag_stuck() == []  # once
    (notice,) = stuck_notices(store)
    assert notice["type"] == "order.stuck"
    data = notice["data"]
    assert data["status"] == "AWAITING_PAYMENT" and data["version"] == 1
    assert data["expected_seconds"] == HOUR and data["reason"] == o.stuck_reason
    assert data["stuck_since"] == datetime(2026, 1, 1, tzinfo=UTC).isoformat()


def test_each_state_has_its_own_time_and_a_change_starts_it_again(store: Store, clock: Clock) -> None:
    store.apply([ev("AWAITING_PAYMENT")])
    clock.advance(HOUR + 1)
    assert len(store.flag_stuck()) == 1
    store.apply([ev("PAYMENT_COMPLETED")])  # moves: no longer stuck
    assert order(store).stuck_at is None and order(store).stuck_reason is None
    clock.advance(HOUR + 1)
    assert store.flag_stuck() == []  # PROCESSING is given two hours
    clock.advance(HOUR)
    assert len(store.flag_stuck()) == 1
    assert [n["data"]["status"] for n in stuck_notices(store)] == ["AWAITING_PAYMENT", "PROCESSING"]


def test_finished_orders_and_other_providers_states_are_not_flagged(store: Store, clock: Clock) -> None:
    store.apply([ev("SUCCESS", "done"), ev("AWAITING_PAYMENT", "open")])
    clock.advance(30 * 24 * HOUR)
    assert [f.external_order_id for f in store.flag_stuck()] == ["open"]


def test_the_reason_names_an_open_anomaly(store: Store, clock: Clock) -> None:
    store.apply([ev("AWAITING_PAYMENT"), ev("NOT_A_STATUS")])
    clock.advance(HOUR + 1)
    store.flag_stuck()
    assert order(store).stuck_reason.endswith("anomaly open (unknown_status)")


def test_the_reason_names_failing_polls(store: Store, clock: Clock) -> None:
    store.apply([ev("AWAITING_PAYMENT")])
    clock.advance(60)
    store.apply([ev("AWAITING_PAYMENT", source="poll", at=clock.now)])
    clock.advance(60)
    store.poll_failed("alixpay", "o-1")
    clock.advance(HOUR)
    store.flag_stuck()
    reason = order(store).stuck_reason
    assert "polls failing (last answer 2026-01-01T00:01:00+00:00" in reason, reason


def test_a_batch_is_bounded(store: Store, clock: Clock) -> None:
    store.apply([ev("AWAITING_PAYMENT", f"o-{i}") for i in range(5)])
    clock.advance(HOUR + 1)
    assert len(store.flag_stuck(limit=3)) == 3
    assert len(store.flag_stuck(limit=3)) == 2
    assert len(stuck_notices(store)) == 5


def test_an_order_never_called_back_says_so(store: Store, clock: Clock) -> None:
    store.apply([ev("AWAITING_PAYMENT", source="poll", at=clock.now)])
    clock.advance(HOUR + 1)
    store.flag_stuck()
    assert order(store).stuck_reason == "AWAITING_PAYMENT for 1h (expected 1h): no callback yet"


def test_an_order_claimed_for_creation_and_never_answered_gets_stuck(store: Store, clock: Clock) -> None:
    # Our creation request never came back (timeout, crash): the order stays CREATED.
    assert store.claim_creation("alixpay", "lost-1", None, "pending:x") is None
    clock.advance(15 * 60 + 1)
    assert [f.external_order_id for f in store.flag_stuck()] == ["lost-1"]
    assert order(store, "lost-1").stuck_reason.startswith("CREATED for 15m (expected 15m)")
