"""Replaying a recorded event repairs an order: after its provider's status map learned a
status the order saw before, the replay moves the order to where its whole history now
resolves; otherwise a replay changes nothing and trusts no more than its record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from config import PollPolicy
from orders.db import make_engine
from orders.events import COVERS_ALL, Event
from orders.models import EventRecord, Notification
from orders.providers import STATUS_MAPS
from orders.states import Decision, Status, StatusMap
from orders.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# AliX's map as it will be once it knows a status it sends and we did not know of.
LEARNED = StatusMap(
    "alixpay",
    {**STATUS_MAPS["alixpay"].entries, **StatusMap.build("alixpay", {"REFUNDED": Status.REFUNDED}).entries},
)


def store_with(database_url: str, maps) -> Store:
    return Store(make_engine(database_url), maps, {"alixpay": PollPolicy(backoff=(10,))}, clock=lambda: T0)


@pytest.fixture
def before(database_url: str) -> Store:
    s = store_with(database_url, STATUS_MAPS)
    yield s
    s.engine.dispose()


@pytest.fixture
def after(database_url: str) -> Store:
    s = store_with(database_url, {**STATUS_MAPS, "alixpay": LEARNED})
    yield s
    s.engine.dispose()


def ev(status: str, at: int, *, covers=COVERS_ALL) -> Event:
    return Event(
        provider="alixpay",
        external_order_id="o-1",
        provider_status=status,
        source="callback",
        dedup_key=f"status:{status}",
        raw_body=json.dumps({"status": status}),
        received_at=(T0 + timedelta(seconds=at)).isoformat(),
        verified_by="ALIXPAY_PUBLIC_KEY",
        fiat_amount="100000",
        covers=covers,
    )


def record_id(store: Store, status: str) -> int:
    with store.sessions() as s:
        return s.scalars(
            select(EventRecord.id).where(EventRecord.provider_status == status).order_by(EventRecord.id)
        ).first()


def test_a_status_learned_since_is_applied_by_replaying_its_event(before: Store, after: Store) -> None:
    before.apply([ev("AWAITING_PAYMENT", 0), ev("PAYMENT_COMPLETED", 10), ev("REFUNDED", 20)])
    order = before.order_view("alixpay", "o-1")
    assert (order.status, [e.decision for e in order.events][-1]) == ("PROCESSING", "unknown_status")

    out = after.replay_event(record_id(before, "REFUNDED"))
    assert (out.decision, out.status, out.changed) == (Decision.APPLIED, Status.REFUNDED, True)
    order = after.order_view("alixpay", "o-1")
    assert (order.status, order.provider_status, order.version) == ("REFUNDED", "REFUNDED", 3)
    with after.sessions() as s:
        told = [json.loads(n.body)["data"] for n in s.scalars(select(Notification).order_by(Notification.id))]
    assert (told[-1]["previous_status"], told[-1]["status"], told[-1]["source"]) == (
        "PROCESSING",
        "REFUNDED",
        "replay",
    )
    again = after.replay_event(record_id(before, "REFUNDED"))
    assert again.decision is Decision.DUPLICATE and not again.changed


def test_replaying_an_old_event_changes_nothing(before: Store) -> None:
    before.apply([ev("AWAITING_PAYMENT", 0), ev("PAYMENT_COMPLETED", 10)])
    out = before.replay_event(record_id(before, "AWAITING_PAYMENT"))
    assert not out.changed and out.decision in (Decision.STALE, Decision.DUPLICATE)
    assert before.order_view("alixpay", "o-1").status == "PROCESSING"


def test_a_replayed_claim_stays_a_claim(before: Store, after: Store) -> None:
    before.apply([ev("AWAITING_PAYMENT", 0), ev("REFUNDED", 10, covers=("fiat_amount",))])
    with before.sessions() as s:
        claim = s.scalars(select(EventRecord).where(EventRecord.claimed_status == "REFUNDED")).one()
    out = after.replay_event(claim.id)
    assert out.decision is Decision.RECORDED and not out.changed
    assert after.order_view("alixpay", "o-1").status == "AWAITING_PAYMENT"


def test_replaying_an_unknown_status_raises_no_second_anomaly(before: Store) -> None:
    before.apply([ev("AWAITING_PAYMENT", 0), ev("REFUNDED", 10)])
    out = before.replay_event(record_id(before, "REFUNDED"))
    assert out.decision is Decision.UNKNOWN_STATUS and out.anomalies == ()
    assert [a.kind for a in before.order_view("alixpay", "o-1").anomalies] == ["unknown_status"]
