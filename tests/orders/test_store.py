"""The single writer: adoption, decisions, versions, anomalies, dedup, poll schedule."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select

from config import PollPolicy
from orders.db import make_engine
from orders.events import COVERS_ALL, Event
from orders.models import Anomaly, EventRecord, Order
from orders.providers import STATUS_MAPS
from orders.states import Decision, Status
from orders.store import Store


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Store:
    s = Store(
        make_engine(database_url),
        STATUS_MAPS,
        {"alixpay": PollPolicy(backoff=(10, 20, 40), horizon=3600)},
        clock=clock,
    )
    yield s
    s.engine.dispose()


def ev(status: str | None, order: str = "o-1", source: str = "callback", amount: str | None = "100000", **kw):
    return Event(
        provider="alixpay",
        external_order_id=order,
        provider_status=status,
        source=source,
        dedup_key=kw.pop("dedup_key", f"status:{status}" if status else "create"),
        raw_body=kw.pop("raw_body", f'{{"status":"{status}"}}'),
        received_at=kw.pop("received_at", datetime(2026, 1, 1, tzinfo=UTC).isoformat()),
        verified_by="ALIXPAY_PUBLIC_KEY+ALIXPAY_SECRET_KEY",
        fiat_amount=amount,
        covers=kw.pop("covers", COVERS_ALL),
        **kw,
    )


def rows(store: Store, model):
    with store.sessions() as s:
        return s.scalars(select(model).order_by(model.id)).all()


def test_adopts_an_unknown_order_and_applies(store: Store, clock: FakeClock) -> None:
    (out,) = store.apply([ev("AWAITING_PAYMENT")])
    assert out.decision is Decision.APPLIED
    assert out.status is Status.AWAITING_PAYMENT and out.version == 1 and out.changed
    order = store.order_view("alixpay", "o-1")
    assert order.status == "AWAITING_PAYMENT"
    assert order.provider_status == "AWAITING_PAYMENT"
    assert order.fiat_amount == "100000"
    assert order.next_poll_at == clock.now + timedelta(seconds=10)
    (record,) = order.events
    assert record.decision == "applied" and record.from_status == "CREATED"
    assert record.verified_by == "ALIXPAY_PUBLIC_KEY+ALIXPAY_SECRET_KEY"
    assert record.raw_body == '{"status":"AWAITING_PAYMENT"}'


def test_forward_skip_stale_duplicate_and_terminal(store: Store) -> None:
    outs = store.apply(
        [
            ev("PROCESSING_TOKEN_TRANSFER"),
            ev("AWAITING_PAYMENT"),
            ev("PROCESSING_TOKEN_TRANSFER"),
            ev("SUCCESS"),
        ]
    )
    assert [o.decision for o in outs] == [
        Decision.APPLIED,
        Decision.STALE,
        Decision.DUPLICATE,
        Decision.APPLIED,
    ]
    assert outs[-1].status is Status.SUCCESS and outs[-1].version == 2
    order = store.order_view("alixpay", "o-1")
    assert order.terminal_at is not None and order.next_poll_at is None
    # Every delivery is recorded; the same delivery again is counted on its record.
    assert [(e.decision, e.seen_count) for e in order.events] == [
        ("applied", 2),
        ("stale", 1),
        ("applied", 1),
    ]
    assert outs[2].replayed and not outs[1].replayed
    # Only applied ones count for dedup.
    (late,) = store.apply([ev("AWAITING_PAYMENT", raw_body='{"late":true}')])
    assert late.decision is Decision.STALE and late.status is Status.SUCCESS


def test_conflicting_terminal_is_an_anomaly_and_never_applied(store: Store) -> None:
    store.apply([ev("SUCCESS")])
    (out,) = store.apply([ev("ERROR")])
    assert out.decision is Decision.CONFLICT and out.status is Status.SUCCESS
    order = store.order_view("alixpay", "o-1")
    assert [a.kind for a in order.anomalies] == ["conflict"]
    assert order.status == "SUCCESS" and order.version == 1


def test_unknown_status_is_recorded_and_keeps_state(store: Store) -> None:
    store.apply([ev("AWAITING_PAYMENT")])
    (out,) = store.apply([ev("REFUND_PENDING")])
    assert out.decision is Decision.UNKNOWN_STATUS and out.status is Status.AWAITING_PAYMENT
    order = store.order_view("alixpay", "o-1")
    assert [a.kind for a in order.anomalies] == ["unknown_status"]
    assert order.events[-1].provider_status == "REFUND_PENDING"


def test_amount_mismatch_raises_an_anomaly(store: Store) -> None:
    store.apply([ev("AWAITING_PAYMENT", amount="100000")])
    (out,) = store.apply([ev("SUCCESS", amount="90000")])
    assert out.anomalies == ("amount_mismatch",)
    order = store.order_view("alixpay", "o-1")
    assert order.fiat_amount == "100000"
    (anomaly,) = order.anomalies
    assert anomaly.kind == "amount_mismatch" and "90000" in anomaly.detail
    # Same value written differently is not a mismatch.
    store.apply([ev("AWAITING_PAYMENT", order="o-2", amount="100000")])
    (out,) = store.apply([ev("SUCCESS", order="o-2", amount="100000.00")])
    assert out.anomalies == ()


def test_creation_then_answer(store: Store) -> None:
    (created,) = store.apply([ev(None, source="create", kind="sell", fiat_currency="VND")])
    assert created.decision is Decision.APPLIED and created.status is Status.CREATED
    (again,) = store.apply([ev(None, source="create")])
    assert again.decision is Decision.DUPLICATE
    (answer,) = store.apply([ev("AWAITING_PAYMENT", source="create")])
    assert answer.status is Status.AWAITING_PAYMENT
    order = store.order_view("alixpay", "o-1")
    assert order.kind == "sell" and order.fiat_currency == "VND"


def test_batch_spanning_orders_keeps_input_order_of_outcomes(store: Store) -> None:
    outs = store.apply([ev("SUCCESS", order="b"), ev("AWAITING_PAYMENT", order="a"), ev("ERROR", order="b")])
    assert [(o.event.external_order_id, o.decision) for o in outs] == [
        ("b", Decision.APPLIED),
        ("a", Decision.APPLIED),
        ("b", Decision.CONFLICT),
    ]


def test_poll_backoff_and_due_claims(store: Store, clock: FakeClock) -> None:
    store.apply([ev("AWAITING_PAYMENT")])
    assert store.claim_due(10, 120, ["alixpay"]) == []
    clock.advance(10)
    (due,) = store.claim_due(10, 120, ["alixpay"])
    assert (due.provider, due.external_order_id) == ("alixpay", "o-1")
    assert store.claim_due(10, 120, ["alixpay"]) == []  # leased
    # Unchanged polls back off along the schedule, capped at its last step.
    for expected in (20, 40, 40):
        store.apply([ev("AWAITING_PAYMENT", source="poll")])
        assert store.order_view("alixpay", "o-1").next_poll_at == clock.now + timedelta(seconds=expected)
    # A change resets the schedule.
    store.apply([ev("PAYMENT_COMPLETED", source="poll")])
    order = store.order_view("alixpay", "o-1")
    assert order.poll_attempts == 0 and order.next_poll_at == clock.now + timedelta(seconds=10)
    store.poll_failed("alixpay", "o-1")
    assert store.order_view("alixpay", "o-1").next_poll_at == clock.now + timedelta(seconds=20)
    store.apply([ev("SUCCESS", source="poll")])
    clock.advance(3600)
    assert store.claim_due(10, 120, ["alixpay"]) == []  # terminal orders are never due


def test_claim_due_is_bounded_and_oldest_first(store: Store, clock: FakeClock) -> None:
    for i in range(5):
        store.apply([ev("AWAITING_PAYMENT", order=f"o-{i}")])
        clock.advance(1)
    clock.advance(60)
    first = store.claim_due(3, 120, ["alixpay"])
    assert [d.external_order_id for d in first] == ["o-0", "o-1", "o-2"]
    second = store.claim_due(3, 120, ["alixpay"])
    assert [d.external_order_id for d in second] == ["o-3", "o-4"]
    assert store.claim_due(3, 120, ["fuspay"]) == []


def test_stale_flag_raised_once_past_the_horizon(store: Store, clock: FakeClock) -> None:
    store.apply([ev("AWAITING_PAYMENT", order="open"), ev("SUCCESS", order="done")])
    assert store.flag_stale() == []
    clock.advance(3601)
    flagged = store.flag_stale()
    assert [f.external_order_id for f in flagged] == ["open"]
    assert store.flag_stale() == []
    assert [a.kind for a in store.order_view("alixpay", "open").anomalies] == ["stale"]


def test_applied_dedup_is_unique_in_the_database(store: Store) -> None:
    store.apply([ev("AWAITING_PAYMENT")])
    order = store.order_view("alixpay", "o-1")
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), store.sessions.begin() as s:
        rec = order.events[0]
        s.add(
            EventRecord(
                **{c.name: getattr(rec, c.name) for c in EventRecord.__table__.columns if c.name != "id"}
            )
        )


def test_concurrent_writers_serialise_per_order(store: Store) -> None:
    """Many threads applying the same order's events: one version per applied change."""
    statuses = ["AWAITING_PAYMENT", "PAYMENT_COMPLETED", "SUCCESS"] * 4
    errors: list[BaseException] = []

    def worker(status: str) -> None:
        try:
            store.apply([ev(status, order="race")])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in statuses]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    order = store.order_view("alixpay", "race")
    assert order.status == "SUCCESS"
    applied = [e for e in order.events if e.decision == "applied"]
    assert order.version == len(applied) <= 3
    assert len(order.events) == 3  # one record per distinct delivery
    assert sum(e.seen_count for e in order.events) == len(statuses)
    assert len(rows(store, Order)) == 1
    assert rows(store, Anomaly) == []


def test_a_poll_resumes_a_held_order_even_to_a_status_seen_before(store: Store) -> None:
    def cev(status: str, when: int, source: str = "poll") -> Event:
        moment = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=when)).isoformat()
        return Event(
            provider="changelly",
            external_order_id="held",
            provider_status=status,
            source=source,
            dedup_key=f"status:{status}",
            raw_body=status,  # the same state reads the same
            received_at=moment,
            fetched_at=moment if source == "poll" else None,
            covers=COVERS_ALL,
        )

    outs = store.apply([cev("pending", 0), cev("hold", 10), cev("pending", 20), cev("pending", 30)])
    assert [o.decision for o in outs] == [
        Decision.APPLIED,
        Decision.APPLIED,
        Decision.APPLIED,
        Decision.DUPLICATE,
    ]
    assert outs[2].status is Status.PROCESSING and outs[2].version == 3
    assert outs[3].replayed  # the same answer again: counted on its record
    # A late callback repeating the first pending does not resume anything twice.
    (late,) = store.apply([cev("pending", 25, source="callback")])
    assert late.decision is Decision.DUPLICATE
    (done,) = store.apply([cev("complete", 40)])
    assert done.status is Status.SUCCESS
    keys = [e.dedup_key for e in store.order_view("changelly", "held").events if e.decision == "applied"]
    assert keys == ["status:pending", "status:hold", "status:pending@v3", "status:complete"]


def test_a_poll_can_hold_an_order_again_after_it_resumed(store: Store) -> None:
    def cev(status: str, when: int, source: str = "poll") -> Event:
        moment = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=when)).isoformat()
        return Event(
            provider="changelly",
            external_order_id="twice",
            provider_status=status,
            source=source,
            dedup_key=f"status:{status}",
            raw_body=status,  # the same state reads the same
            received_at=moment,
            fetched_at=moment if source == "poll" else None,
            covers=COVERS_ALL,
        )

    outs = store.apply(
        [cev("pending", 0), cev("hold", 10), cev("pending", 20), cev("hold", 15, "callback"), cev("hold", 30)]
    )
    assert [o.decision for o in outs] == [
        Decision.APPLIED,
        Decision.APPLIED,
        Decision.APPLIED,
        Decision.DUPLICATE,  # a callback of the old hold, older than the resume, proves nothing
        Decision.APPLIED,  # the provider says, now, that it is held again
    ]
    assert outs[-1].status is Status.ON_HOLD
    (resumed,) = store.apply([cev("pending", 40)])
    assert resumed.status is Status.PROCESSING and resumed.decision is Decision.APPLIED


@pytest.mark.parametrize("odd", ["a\x00b", "a\ud800b"])
def test_a_lookup_of_an_id_no_order_can_have_finds_nothing(store: Store, odd: str) -> None:
    """A NUL fails any query on PostgreSQL: a healing job naming one used to error there."""
    store.apply([ev("AWAITING_PAYMENT")])
    assert store.is_open("alixpay", odd) is False and store.exists("alixpay", odd) is False
    assert store.order_view("alixpay", odd) is None and store.order_ref("alixpay", odd) is None
    assert store.external_id_for("alixpay", odd) is None
    assert store.is_open("alixpay", "o-1") is True


def test_deliveries_again_are_counted_in_statements_that_do_not_grow_with_them(store: Store) -> None:
    """A batch of deliveries again of recorded events counts them on their records without a
    read of each record (which also flushed what the batch had added so far): the statements
    a batch sends do not grow with its replays, and each count and last-seen time is right."""

    def first(n: int) -> list[Event]:
        return [ev("PROCESSING_TOKEN_TRANSFER", order=f"r-{n}-{i}") for i in range(n)]

    def again(n: int, at: str) -> list[Event]:
        return [
            ev("PROCESSING_TOKEN_TRANSFER", order=f"r-{n}-{i}", received_at=at)  # twice each
            for i in range(n)
            for _ in range(2)
        ] + [ev("PROCESSING_TOKEN_TRANSFER", order=f"r-{n}-0", received_at="2025-12-31T00:00:00+00:00")]

    sent: list[str] = []

    def grab(conn, cursor, statement, parameters, context, many) -> None:
        sent.append(statement)

    counts = {}
    for n in (1, 12):
        store.apply(first(n))
        sent.clear()
        sa_event.listen(store.engine, "before_cursor_execute", grab)
        try:
            outcomes = store.apply(again(n, "2026-01-01T00:05:00+00:00"))
        finally:
            sa_event.remove(store.engine, "before_cursor_execute", grab)
        assert all(o.replayed and o.decision is Decision.DUPLICATE for o in outcomes)
        counts[n] = len(sent)
    assert counts[12] == counts[1], counts
    assert sum(s.lstrip().startswith("UPDATE events ") for s in sent) == 1, sent
    for i in range(12):
        (record,) = store.order_view("alixpay", f"r-12-{i}").events
        # Counted three times (once more for r-12-0); last seen at the latest delivery,
        # not moved back by the one that arrived with an earlier time.
        assert record.seen_count == (4 if i == 0 else 3)
        assert record.last_seen_at == datetime(2026, 1, 1, 0, 5, tzinfo=UTC)


def test_a_batch_with_an_anomaly_midway_records_its_events_in_the_order_decided(store: Store) -> None:
    """The event with an anomaly is written at once (its anomaly row needs its id), after
    those decided before it, so every record's id keeps the batch's order of decisions, and
    a delivery again of a record written earlier in the batch is counted on it."""
    store.apply([ev("AWAITING_PAYMENT", order="m-0", amount="100000")])
    outs = store.apply(
        [
            ev("AWAITING_PAYMENT", order="m-1", amount="100000"),
            ev("PAYMENT_COMPLETED", order="m-0", amount="100000"),
            ev("PROCESSING_TOKEN_TRANSFER", order="m-0", amount="90000"),
            ev("PAYMENT_COMPLETED", order="m-0", amount="100000"),  # the same delivery again
            ev("SUCCESS", order="m-0", amount="100000"),
            ev("PAYMENT_COMPLETED", order="m-1", amount="100000"),
        ]
    )
    assert [o.anomalies for o in outs] == [(), (), ("amount_mismatch",), (), (), ()]
    assert outs[3].replayed
    order = store.order_view("alixpay", "m-0")
    assert [(e.provider_status, e.seen_count) for e in order.events] == [
        ("AWAITING_PAYMENT", 1),
        ("PAYMENT_COMPLETED", 2),
        ("PROCESSING_TOKEN_TRANSFER", 1),
        ("SUCCESS", 1),
    ]
    ids = [e.id for e in order.events]
    assert ids == sorted(ids)
    (anomaly,) = order.anomalies
    assert anomaly.event_id == order.events[2].id
    other = store.order_view("alixpay", "m-1")
    # m-0's events were decided first (orders in key order), m-1's after them.
    assert min(e.id for e in other.events) > max(ids)
    assert [e.provider_status for e in other.events] == ["AWAITING_PAYMENT", "PAYMENT_COMPLETED"]
