"""Delivery of partner notifications: real store, real Redis, real RQ workers (burst), and a
real partner endpoint on 127.0.0.1 that verifies every request with the Standard Webhooks
library (``tests/notify_receiver.py``)."""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import requests
import sqlalchemy
from conftest import Keys, alix_settings
from notify_receiver import OK, Arrival, PartnerReceiver
from redis import Redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from scenarios import alixpay_callback
from sqlalchemy import select

from config import Named, Settings
from orders.events import Event
from orders.models import Notification
from workers import jobs
from workers.drain import Drainer
from workers.notify import Deliverer, retry_delay
from workers.services import Services, build_services
from workers.worker import make_worker


def whsec() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


CURRENT, PREVIOUS = whsec(), whsec()


def make_settings(database_url: str, redis: Redis, keys: Keys, url: str | None, **notify: object) -> Settings:
    port = redis.connection_pool.connection_kwargs["port"]
    values: dict[str, object] = dict(
        notify_url=url,
        notify_secrets=(Named("NOTIFY_SECRET", CURRENT),),
        notify_timeout=0.5,
        notify_max_attempts=5,
        notify_backoff=(1,),
    )
    values.update(notify)
    return Settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        providers={"alixpay": alix_settings(keys, "http://127.0.0.1:9")},
        **values,  # type: ignore[arg-type]
    )


@pytest.fixture
def partner() -> Iterator[PartnerReceiver]:
    with PartnerReceiver([CURRENT]) as receiver:
        yield receiver


@pytest.fixture
def runtime(database_url: str, redis: Redis, keys: Keys, partner: PartnerReceiver) -> Iterator[Services]:
    rt = build_services(make_settings(database_url, redis, keys, partner.url), redis=redis)
    token = rt.install()
    yield rt
    token.var.reset(token)
    rt.store.engine.dispose()


def event(status: str, order: str = "o-1") -> Event:
    body = f'{{"externalOrderId":"{order}","status":"{status}","n":{time.time_ns()}}}'
    return alixpay_callback(status, order, body)


def work(rt: Services) -> None:
    make_worker(rt).work(burst=True, with_scheduler=True)


def rows(rt: Services, order: str | None = None) -> list[Notification]:
    with rt.store.sessions() as session:
        stmt = select(Notification).order_by(Notification.id)
        found = session.scalars(stmt).all()
    if order is None:
        return list(found)
    return [n for n in found if f'"external_order_id":"{order}"' in n.body.replace(" ", "")]


def later(rt: Services, seconds: float) -> None:
    """Move the store's clock (the deliverer's too) ``seconds`` ahead of real time."""
    rt.store.clock = lambda: datetime.now(UTC) + timedelta(seconds=seconds)


def test_each_change_is_delivered_signed_byte_for_byte_as_stored(
    runtime: Services, partner: PartnerReceiver
) -> None:
    for status in ("AWAITING_PAYMENT", "PAYMENT_COMPLETED", "SUCCESS"):
        runtime.queues.enqueue_event(event(status))
    work(runtime)
    got = partner.wait_for(3)
    stored = rows(runtime)
    assert [a.body for a in got] == [n.body.encode() for n in stored]
    assert [a.webhook_id for a in got] == [f"msg_{n.id}" for n in stored]
    assert [a.payload["data"]["status"] for a in got] == ["AWAITING_PAYMENT", "PROCESSING", "SUCCESS"]
    assert [a.payload["type"] for a in got] == ["order.status_changed"] * 3
    assert [a.version for a in got] == sorted(a.version for a in got)
    first = got[0]
    assert first.headers["content-type"] == "application/json"
    assert abs(int(first.headers["webhook-timestamp"]) - time.time()) < 30
    assert all(n.delivered_at is not None and n.attempts == 1 and n.next_attempt_at is None for n in stored)
    assert len(partner.arrivals) == 3  # nothing sent twice


def test_rotation_both_secrets_sign_and_either_verifies(database_url: str, redis: Redis, keys: Keys) -> None:
    with (
        PartnerReceiver([CURRENT]) as new,
        PartnerReceiver([PREVIOUS]) as old,
        PartnerReceiver([whsec()]) as stranger,
    ):
        secrets = (Named("NOTIFY_SECRET", CURRENT), Named("NOTIFY_SECRET_PREVIOUS", PREVIOUS))
        for receiver in (new, old, stranger):
            settings = make_settings(database_url, redis, keys, receiver.url, notify_secrets=secrets)
            rt = build_services(settings, redis=redis)
            (outcome,) = rt.store.apply([event("AWAITING_PAYMENT", order=f"o-{receiver.server.port}")])
            with requests.Session() as session:
                report = Deliverer.from_settings(rt.settings, rt.store, session).run(outcome.order_id)
            rt.store.engine.dispose()
            assert (report.delivered, report.failed) == ((0, 1) if receiver is stranger else (1, 0))
        signatures = new.delivered[0].headers["webhook-signature"].split(" ")
        assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
        assert len(old.delivered) == 1
        assert stranger.arrivals[0].verified is False and stranger.delivered == []


def test_a_failing_receiver_that_recovers_gets_everything_in_order_with_stable_ids(
    runtime: Services, partner: PartnerReceiver
) -> None:
    failures = {"left": 2}

    def answer(_arrival: Arrival) -> tuple[int, float, dict[str, str]]:
        if failures["left"]:
            failures["left"] -= 1
            return (500, 0.0, {})
        return OK

    partner.answer = answer
    for status in ("AWAITING_PAYMENT", "PAYMENT_COMPLETED"):
        runtime.queues.enqueue_event(event(status))
    work(runtime)
    first, second = rows(runtime)
    assert first.attempts == 1 and first.last_error == "HTTP 500" and first.delivered_at is None
    assert second.attempts == 0  # waits behind the failed one
    assert timedelta(seconds=0.9) < first.next_attempt_at - first.created_at < timedelta(seconds=2)
    # The retry was scheduled (no sweep needed): it fails once more, then the next one succeeds.
    for _ in range(2):
        time.sleep(1.3)
        work(runtime)
    got = partner.wait_for(2)
    assert [a.version for a in got] == [first.version, second.version]
    attempts_of_first = [a.webhook_id for a in partner.arrivals if a.version == first.version]
    assert attempts_of_first == [f"msg_{first.id}"] * 3
    assert [n.attempts for n in rows(runtime)] == [3, 1]


def test_a_slow_receiver_times_out_and_is_retried(runtime: Services, partner: PartnerReceiver) -> None:
    slow = {"left": 1}

    def answer(_arrival: Arrival) -> tuple[int, float, dict[str, str]]:
        if slow["left"]:
            slow["left"] -= 1
            return (200, 1.5, {})  # past NOTIFY_TIMEOUT (0.5 s): the sender has given up
        return OK

    partner.answer = answer
    (outcome,) = runtime.store.apply([event("AWAITING_PAYMENT")])
    began = time.monotonic()
    assert jobs.deliver_notifications(outcome.order_id)["failed"] == 1
    assert time.monotonic() - began < 1.4
    (note,) = rows(runtime)
    assert note.last_error == "timed out after 0.5s" and note.delivered_at is None
    later(runtime, 3)
    assert jobs.sweep()["deliveries"] == 1
    work(runtime)
    (note,) = rows(runtime)
    assert note.delivered_at is not None and note.attempts == 2
    assert [a.webhook_id for a in partner.arrivals] == [f"msg_{note.id}"] * 2


def test_redirects_are_not_followed(runtime: Services, partner: PartnerReceiver) -> None:
    with PartnerReceiver([CURRENT]) as elsewhere:
        partner.answer = lambda _a: (307, 0.0, {"Location": elsewhere.url})
        (outcome,) = runtime.store.apply([event("AWAITING_PAYMENT")])
        report = jobs.deliver_notifications(outcome.order_id)
        assert report["failed"] == 1 and report["delivered"] == 0
        assert elsewhere.arrivals == []
    (note,) = rows(runtime)
    assert note.last_error == "HTTP 307 (redirects are not followed)" and note.delivered_at is None


def test_dead_letter_after_max_attempts_then_later_versions_go_out(
    runtime: Services, partner: PartnerReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.settings = replace(runtime.settings, notify_max_attempts=2)
    runtime.store.apply([event("AWAITING_PAYMENT")])
    runtime.store.apply([event("PAYMENT_COMPLETED")])
    doomed, fine = rows(runtime)
    partner.answer = lambda a: (500, 0.0, {}) if a.webhook_id == f"msg_{doomed.id}" else OK
    with caplog.at_level(logging.INFO, logger="rampwatch"):
        assert jobs.deliver_notifications(doomed.order_id)["failed"] == 1
        later(runtime, 3)
        result = jobs.deliver_notifications(doomed.order_id)
    assert (result["dead"], result["delivered"]) == (1, 1)
    doomed, fine = rows(runtime)
    assert doomed.dead_at is not None and doomed.next_attempt_at is None and doomed.attempts == 2
    assert fine.delivered_at is not None
    assert [a.version for a in partner.delivered] == [fine.version]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"msg_{doomed.id}" in warnings[0].getMessage()
    assert "dead-lettered after 2 attempts: HTTP 500" in warnings[0].getMessage()
    assert CURRENT not in caplog.text and "externalOrderId" not in caplog.text and "o-1" not in caplog.text
    # A dead one is never due again: the sweep leaves the order alone.
    assert runtime.store.orders_with_due_notifications(10) == []


def test_one_failing_order_does_not_block_another(runtime: Services, partner: PartnerReceiver) -> None:
    partner.answer = lambda a: (503, 0.0, {}) if a.order == "stuck" else OK
    for order in ("stuck", "fine"):
        for status in ("AWAITING_PAYMENT", "SUCCESS"):
            runtime.queues.enqueue_event(event(status, order=order))
    work(runtime)
    got = partner.wait_for(2)
    assert [(a.order, a.payload["data"]["status"]) for a in got] == [
        ("fine", "AWAITING_PAYMENT"),
        ("fine", "SUCCESS"),
    ]
    assert [a.order for a in partner.arrivals].count("stuck") == 1  # only its head was tried
    stuck = rows(runtime, "stuck")
    assert [n.attempts for n in stuck] == [1, 0] and all(n.delivered_at is None for n in stuck)


def test_changes_queued_before_any_delivery_arrive_in_version_order(
    runtime: Services, partner: PartnerReceiver
) -> None:
    """Several changes wait; two deliveries of the same order race: each notification is
    sent once, in version order."""
    for status in ("AWAITING_PAYMENT", "PAYMENT_COMPLETED", "SUCCESS"):
        runtime.store.apply([event(status)])
    partner.answer = lambda _a: (204, 0.0, {})
    order_id = rows(runtime)[0].order_id
    settings = runtime.settings
    barrier = threading.Barrier(2)
    reports = []

    def deliver() -> None:
        with requests.Session() as session:
            deliverer = Deliverer.from_settings(settings, runtime.store, session)
            barrier.wait()
            reports.append(deliverer.run(order_id))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sum(r.delivered for r in reports) == 3
    assert [a.version for a in partner.arrivals] == [n.version for n in rows(runtime)]
    assert len({a.webhook_id for a in partner.arrivals}) == 3 == len(partner.arrivals)


def test_the_sweep_delivers_what_no_job_queued_and_skips_orders_waiting_on_a_retry(
    runtime: Services, partner: PartnerReceiver
) -> None:
    runtime.store.apply([event("AWAITING_PAYMENT", order="a")])  # the store alone: no job queued
    runtime.store.apply([event("AWAITING_PAYMENT", order="b")])
    (b,) = rows(runtime, "b")
    runtime.store.notification_failed(b.id, "HTTP 500", datetime.now(UTC) + timedelta(hours=1))
    runtime.store.apply([event("SUCCESS", order="b")])  # due, but behind b's first
    assert runtime.store.orders_with_due_notifications(10) == [rows(runtime, "a")[0].order_id]
    assert jobs.sweep()["deliveries"] == 1
    work(runtime)
    assert [(a.order, a.payload["data"]["status"]) for a in partner.wait_for(1)] == [
        ("a", "AWAITING_PAYMENT")
    ]


def test_nothing_is_pushed_without_notify_url(runtime: Services, partner: PartnerReceiver) -> None:
    runtime.settings = replace(runtime.settings, notify_url=None)
    runtime.queues.enqueue_event(event("AWAITING_PAYMENT"))
    work(runtime)
    assert jobs.sweep()["deliveries"] == 0
    assert runtime.queues.notifications.count == 0 and partner.arrivals == []
    (note,) = rows(runtime)
    assert note.delivered_at is None  # kept for the events feed


def test_retry_delays_follow_the_backoff_and_repeat_the_last() -> None:
    backoff = (5, 30, 120)
    assert [retry_delay(backoff, n, 0.0) for n in (1, 2, 3, 4, 9)] == [5, 30, 120, 120, 120]
    assert retry_delay(backoff, 1, 0.2) == pytest.approx(6.0)


def test_a_delivery_asked_for_while_the_orders_job_runs_is_scheduled_once_more(
    runtime: Services, redis: Redis
) -> None:
    """The running job may have looked already: one more run per order is scheduled, never
    a second concurrent one; a queued job absorbs any number of requests."""
    assert runtime.queues.enqueue_delivery(7)
    assert not runtime.queues.enqueue_delivery(7)  # queued: it has not looked yet
    Job.fetch("notify-7", connection=redis, serializer=JSONSerializer).set_status(JobStatus.STARTED)
    assert runtime.queues.enqueue_delivery(7)
    assert not runtime.queues.enqueue_delivery(7)  # the follow-up is scheduled already
    scheduled = runtime.queues.notifications.scheduled_job_registry.get_job_ids()
    assert scheduled == ["notify-again-7"]
    assert runtime.queues.notifications.job_ids == ["notify-7"]


def test_a_drained_batch_of_changes_costs_one_delivery_job_and_each_order_arrives_in_order(
    runtime: Services, partner: PartnerReceiver
) -> None:
    """The callback stream's batch of 5 orders' lifecycles queues one delivery job, not one
    per order; that job sends every notification once, each order's in version order, to
    several orders at once (NOTIFY_CONCURRENCY)."""
    orders = [f"batch-{i}" for i in range(5)]
    statuses = ("AWAITING_PAYMENT", "PAYMENT_COMPLETED", "SUCCESS")
    runtime.stream.append_many([event(status, order) for order in orders for status in statuses])
    assert Drainer(runtime, "c1").drain() == 15
    queued = runtime.queues.notifications.get_jobs()
    assert [job.func_name for job in queued] == ["workers.jobs.deliver_notifications_of"]
    assert len(queued[0].args[0]) == 5
    partner.pause = 0.05  # a partner 50 ms away
    work(runtime)
    got = partner.wait_for(15)
    assert len(partner.arrivals) == 15 and len({a.webhook_id for a in got}) == 15
    for order in orders:
        mine = [a for a in got if a.order == order]
        assert [a.payload["data"]["status"] for a in mine] == ["AWAITING_PAYMENT", "PROCESSING", "SUCCESS"]
    assert partner.most_in_flight > 1  # orders delivered side by side
    assert all(n.delivered_at is not None and n.attempts == 1 for n in rows(runtime))


def test_a_batch_job_past_its_budget_leaves_the_rest_scheduled(
    runtime: Services, partner: PartnerReceiver
) -> None:
    for order in ("late-1", "late-2", "late-3"):
        runtime.store.apply([event("AWAITING_PAYMENT", order)])
    ids = sorted({n.order_id for n in rows(runtime)})
    with requests.Session() as session:
        deliverer = Deliverer.from_settings(runtime.settings, runtime.store, session)
        reports = replace(deliverer, budget=-1.0).run_many(ids, 2)
    assert sorted(reports) == ids and all(r.budget_spent for r in reports.values())
    assert all(n.attempts == 0 for n in rows(runtime))  # no round started: nothing claimed
    # The job schedules each order's delivery again; nothing was sent.
    jobs._follow_up(runtime, ids[0], reports[ids[0]])
    assert f"notify-again-{ids[0]}" in runtime.queues.notifications.scheduled_job_registry.get_job_ids()
    assert partner.arrivals == []


def test_an_orders_notifications_sent_in_a_row_cost_one_transaction_each(
    runtime: Services, partner: PartnerReceiver
) -> None:
    """Three notifications of one order: a claim, then for each one sent its record as
    delivered and the next claim together (4 transactions), not a claim and a record
    each plus the last, empty, claim (7)."""
    for status in ("AWAITING_PAYMENT", "PAYMENT_COMPLETED", "SUCCESS"):
        runtime.store.apply([event(status, "commits-1")])
    order_id = rows(runtime)[0].order_id
    commits: list[int] = []
    listener = lambda _conn: commits.append(1)  # noqa: E731
    sqlalchemy.event.listen(runtime.store.engine, "commit", listener)
    try:
        with requests.Session() as session:
            report = Deliverer.from_settings(runtime.settings, runtime.store, session).run(order_id)
    finally:
        sqlalchemy.event.remove(runtime.store.engine, "commit", listener)
    assert report.delivered == 3
    assert len(commits) == 4
    assert [a.version for a in partner.arrivals] == [n.version for n in rows(runtime)]
    assert all(n.delivered_at is not None and n.attempts == 1 for n in rows(runtime))


def test_a_batch_of_changes_to_many_orders_is_delivered_in_rounds_of_one_transaction(
    runtime: Services, partner: PartnerReceiver
) -> None:
    """Six orders with one new notification each, one with two more: the job claims every
    order's head in one transaction, sends them side by side, then records them delivered
    and claims the next heads in one more (only the seventh order has one), and so on: 4
    transactions in all, not 2 for each of the 9 notifications."""
    for n in range(6):
        runtime.store.apply([event("AWAITING_PAYMENT", f"round-{n}")])
    for status in ("PAYMENT_COMPLETED", "SUCCESS"):
        runtime.store.apply([event(status, "round-0")])
    ids = sorted({n.order_id for n in rows(runtime)})
    commits: list[int] = []
    listener = lambda _conn: commits.append(1)  # noqa: E731
    sqlalchemy.event.listen(runtime.store.engine, "commit", listener)
    try:
        totals = jobs.deliver_notifications_of(ids)  # the job, in this process
    finally:
        sqlalchemy.event.remove(runtime.store.engine, "commit", listener)
    assert totals == {"orders": 6, "delivered": 8, "failed": 0, "dead": 0, "left": 0}
    assert len(commits) == 4  # claim 6; 6 delivered + claim 1; 1 delivered + claim 1; 1 delivered + claim 0
    assert len(partner.arrivals) == 8 and len({a.webhook_id for a in partner.arrivals}) == 8
    first = [a.version for a in partner.arrivals if a.order == "round-0"]
    assert first == sorted(first) == [n.version for n in rows(runtime, "round-0")]
    assert all(n.delivered_at is not None and n.attempts == 1 for n in rows(runtime))


def test_runs_over_overlapping_orders_send_each_notification_once_and_in_order(
    runtime: Services, partner: PartnerReceiver
) -> None:
    """Three runs at once over overlapping sets of 12 orders with three notifications each
    (a partner 10 ms away): every notification reaches the partner once, each order's in
    version order, nobody waits on a lock another run holds, and nothing is left."""
    orders = [f"overlap-{n}" for n in range(12)]
    for status in ("AWAITING_PAYMENT", "PAYMENT_COMPLETED", "SUCCESS"):
        runtime.store.apply([event(status, order) for order in orders])
    by_order = {}
    for note in rows(runtime):
        by_order.setdefault(note.order_id, []).append(note)
    ids = sorted(by_order)
    partner.pause = 0.01
    sets = [ids[:8], ids[4:], ids[::2] + ids[1::4]]
    errors: list[BaseException] = []

    def run(order_ids: list[int]) -> None:
        try:
            with requests.Session() as session:
                Deliverer.from_settings(runtime.settings, runtime.store, session).run_many(order_ids, 4)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(chosen,)) for chosen in sets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and not any(t.is_alive() for t in threads)
    # What a run left to another (a head it found held) the next run or the sweep sends.
    Deliverer.from_settings(runtime.settings, runtime.store, requests.Session()).run_many(ids, 4)
    assert len(partner.arrivals) == 36 and len({a.webhook_id for a in partner.arrivals}) == 36
    for order in orders:
        versions = [a.version for a in partner.arrivals if a.order == order]
        assert versions == [1, 2, 3], (order, versions)
    assert all(n.delivered_at is not None and n.attempts == 1 for n in rows(runtime))


def test_a_head_another_transaction_holds_is_left_out_not_waited_for(
    runtime: Services, database_url: str
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time: no other transaction holds a row")
    for order in ("held", "free"):
        runtime.store.apply([event("AWAITING_PAYMENT", order)])
    held, free = rows(runtime, "held")[0], rows(runtime, "free")[0]
    got: list[dict[int, Notification]] = []
    claim = threading.Thread(
        target=lambda: got.append(runtime.store.claim_notifications([held.order_id, free.order_id], 60))
    )
    with runtime.store.sessions.begin() as other:  # another run claiming, or recording, "held"
        other.execute(select(Notification.id).where(Notification.id == held.id).with_for_update())
        claim.start()
        claim.join(5.0)
        assert got, "the claim waited for the other transaction's lock"
    claim.join(5.0)
    (claimed,) = got
    assert list(claimed) == [free.order_id] and claimed[free.order_id].id == free.id
    assert claimed[free.order_id].attempts == 1
    again = runtime.store.claim_notifications([held.order_id, free.order_id], 60)
    assert list(again) == [held.order_id]  # free's is leased; held's is free now
