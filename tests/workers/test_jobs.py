"""Jobs run by real RQ workers (SimpleWorker, burst) on the private Redis."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Keys, alix_settings
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from scenarios import alixpay_callback

from config import Settings
from workers.clock import Clock
from workers.queue import APPLY_JOB, EVENTS, POLLS, Queues
from workers.services import Services, build_services
from workers.worker import make_worker


def make_settings(
    database_url: str, redis: Redis, keys: Keys, base_url: str = "http://127.0.0.1:9"
) -> Settings:
    port = redis.connection_pool.connection_kwargs["port"]
    return Settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        providers={"alixpay": alix_settings(keys, base_url)},
        sweep_batch=2,
        poll_batch=3,
        poll_lease=60,
    )


@pytest.fixture
def runtime(database_url: str, redis: Redis, keys: Keys):
    rt = build_services(make_settings(database_url, redis, keys), redis=redis)
    token = rt.install()
    yield rt
    token.var.reset(token)
    rt.store.engine.dispose()


event = alixpay_callback


def work(rt: Services) -> None:
    make_worker(rt).work(burst=True, with_scheduler=True)


def test_worker_applies_queued_events(runtime: Services) -> None:
    for status in ("PAYMENT_COMPLETED", "AWAITING_PAYMENT", "SUCCESS", "SUCCESS"):
        runtime.queues.enqueue_event(event(status, body=f'{{"s":"{status}","n":{time.time_ns()}}}'))
    work(runtime)
    order = runtime.store.order_view("alixpay", "o-1")
    assert order.status == "SUCCESS" and order.version == 2
    assert sorted(e.decision for e in order.events) == ["applied", "applied", "duplicate", "stale"]


def test_bad_payload_goes_to_the_failed_registry_at_once(runtime: Services, redis: Redis) -> None:
    payload = {**event("SUCCESS").to_dict(), "v": 99}
    runtime.queues._enqueue_unique(runtime.queues.events, APPLY_JOB, (payload,), "event-bad", retry=None)
    work(runtime)
    job = Job.fetch("event-bad", connection=redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED
    assert "unsupported event version" in (job.latest_result().exc_string or "")
    assert "event-bad" in FailedJobRegistry(EVENTS, connection=redis).get_job_ids()
    # The same job id offered again is requeued, not swallowed.
    assert runtime.queues._enqueue_unique(runtime.queues.events, APPLY_JOB, (payload,), "event-bad")
    assert job.get_status(refresh=True) == JobStatus.QUEUED


def test_a_failed_apply_is_retried_not_swallowed(redis: Redis, keys: Keys, tmp_path: Path) -> None:
    """The database is not migrated yet: the apply fails, RQ retries, the retry applies."""
    from orders.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'late.sqlite3'}"
    rt = build_services(make_settings(url, redis, keys), redis=redis)
    rt.install()
    ev = event("SUCCESS")
    job_id = rt.queues.enqueue_event(ev)
    work(rt)
    job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.SCHEDULED and job.retries_left == 4
    # A redelivery while the retry is pending is already accepted: no second job.
    assert rt.queues.enqueue_event(ev) == job_id
    assert Queue(EVENTS, connection=redis, serializer=JSONSerializer).count == 0
    upgrade(url)
    time.sleep(1.2)  # the first retry interval
    work(rt)
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert rt.store.order_view("alixpay", "o-1").status == "SUCCESS"
    rt.store.engine.dispose()


def test_sweep_enqueues_due_polls_once_in_bounded_batches(runtime: Services, redis: Redis) -> None:
    """Claims of RAMPWATCH_SWEEP_BATCH (2 here) while they come back full, until the polls
    queue holds four claims' worth (8); batches of RAMPWATCH_POLL_BATCH (3 here)."""
    clock_now = datetime.now(UTC)
    runtime.store.apply([event("AWAITING_PAYMENT", order=f"o-{i:02}") for i in range(11)])
    runtime.store.apply([event("SUCCESS", order="done")])
    runtime.store.clock = lambda: clock_now + timedelta(hours=1)
    from workers import jobs

    first = jobs.sweep()
    assert (first["due"], first["queued"], first["batches"]) == (8, 8, 3)  # batches of 3, 3, 2
    assert jobs.sweep()["due"] == 0  # the queue is still deep: nothing more is claimed
    polls = Queue(POLLS, connection=redis, serializer=JSONSerializer)
    seen = [Job.fetch(i, connection=redis, serializer=JSONSerializer).args for i in polls.job_ids]
    for job_id in polls.job_ids:  # the workers take them
        polls.remove(job_id)
    third = jobs.sweep()
    assert (third["due"], third["batches"]) == (3, 1)  # the rest; the first eight are leased
    assert jobs.sweep()["due"] == 0
    seen += [Job.fetch(i, connection=redis, serializer=JSONSerializer).args for i in polls.job_ids]
    assert [len(ids) for _, ids, _ in seen] == [3, 3, 2, 3]
    assert sorted(oid for _, ids, _ in seen for oid in ids) == [f"o-{i:02}" for i in range(11)]
    assert {(provider, reason) for provider, _, reason in seen} == {("alixpay", "sweep")}
    # A batch already queued is not queued twice, even if asked again.
    provider, ids, _ = seen[-1]
    assert not runtime.queues.enqueue_poll_batch(provider, ids)
    assert polls.count == 1


def test_exactly_one_clock_ticks(redis: Redis) -> None:
    queues = Queues(redis)
    a = Clock(redis, queues, interval=0.05)
    b = Clock(redis, queues, interval=0.05)
    threads = [threading.Thread(target=c.run) for c in (a, b)]
    for t in threads:
        t.start()
    time.sleep(0.6)
    ticking = [c for c in (a, b) if c.ticks > 0]
    assert len(ticking) == 1
    leader = ticking[0]
    other = b if leader is a else a
    before = other.ticks
    leader.stop.set()  # the leader stops and releases the lock: the other takes over
    time.sleep(0.6)
    assert other.ticks > before
    other.stop.set()
    for t in threads:
        t.join(5)
    # One sweep job at a time, whatever the number of ticks.
    control = Queue("control", connection=redis, serializer=JSONSerializer)
    assert control.count == 1


def test_trigger_polls_are_rate_limited_per_order_and_never_dropped(redis: Redis) -> None:
    from rq.registry import ScheduledJobRegistry

    queues = Queues(redis)
    assert queues.enqueue_trigger_poll("changelly", "o-1", window=30) == "queued"
    # Replays inside the window collapse into one poll scheduled for the window's end.
    assert queues.enqueue_trigger_poll("changelly", "o-1", window=30) == "scheduled"
    assert queues.enqueue_trigger_poll("changelly", "o-1", window=30) == "already scheduled"
    assert queues.enqueue_trigger_poll("changelly", "o-2", window=30) == "queued"
    polls = Queue(POLLS, connection=redis, serializer=JSONSerializer)
    assert sorted(
        Job.fetch(i, connection=redis, serializer=JSONSerializer).args[1] for i in polls.job_ids
    ) == [
        "o-1",
        "o-2",
    ]
    scheduled = ScheduledJobRegistry(POLLS, connection=redis, serializer=JSONSerializer)
    (job_id,) = scheduled.get_job_ids()
    job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    assert job.args == ["changelly", "o-1", "callback (deferred)"]
    when = scheduled.get_scheduled_time(job)
    assert 20 <= (when - datetime.now(UTC)).total_seconds() <= 31


def test_a_version_1_payload_still_queued_is_read_with_the_adapters_coverage(
    runtime: Services, redis: Redis
) -> None:
    """What the previous release queued: no coverage, claims in details."""
    v1 = {
        **{k: v for k, v in event("PAYMENT_COMPLETED").to_dict().items() if k in V1_FIELDS},
        "v": 1,
        "kind": "sell",
        "details": {"tx_hash": "0xunsigned", "claimed_status": "SUCCESS"},
    }
    runtime.queues._enqueue_unique(runtime.queues.events, APPLY_JOB, (v1,), "event-v1")
    work(runtime)
    assert (
        Job.fetch("event-v1", connection=redis, serializer=JSONSerializer).get_status() == JobStatus.FINISHED
    )
    order = runtime.store.order_view("alixpay", "o-1")
    # An AliX IPN covers status, kind and amount: those are written, the rest is not.
    assert (order.status, order.kind, order.fiat_amount) == ("PROCESSING", "sell", "100000")
    assert order.details == {}
    (record,) = order.events
    assert record.claimed_status == "SUCCESS" and record.covers == "provider_status,kind,fiat_amount"


V1_FIELDS = {
    "provider",
    "external_order_id",
    "provider_status",
    "source",
    "dedup_key",
    "raw_body",
    "received_at",
    "verified_by",
    "provider_order_id",
    "kind",
    "fiat_amount",
    "fiat_currency",
    "crypto_amount",
    "crypto_currency",
    "details",
}


def test_a_provider_that_cannot_be_reached_is_retried_and_backs_off(runtime: Services, redis: Redis) -> None:
    """ALIXPAY_BASE_URL points at a closed port: ProviderUnavailable, not a data error."""
    runtime.store.apply([event("AWAITING_PAYMENT")])
    assert runtime.queues.enqueue_poll("alixpay", "o-1", "sweep")
    work(runtime)
    from workers.queue import poll_job_id

    job = Job.fetch(poll_job_id("alixpay", "o-1"), connection=redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.SCHEDULED and job.retries_left == 1
    order = runtime.store.order_view("alixpay", "o-1")
    assert order.poll_attempts == 1 and order.last_polled_at is not None
    # Asked for again (the sweep, once the order's poll backoff says so): it runs now, its
    # retry does not hold the order back for the retry's interval.
    assert runtime.queues.enqueue_poll("alixpay", "o-1", "sweep")
    assert job.get_status(refresh=True) == JobStatus.QUEUED
    assert not runtime.queues.enqueue_poll("alixpay", "o-1", "sweep")  # queued once


def test_the_sweep_keeps_its_cadence_whatever_the_backlog(runtime: Services, redis: Redis) -> None:
    """A sweep queued behind a backlog of callbacks and polls runs next, not after them: the
    control queue comes first (issue 11 saw sweeps every ~19 s instead of 5 under load)."""
    for i in range(30):
        runtime.queues.enqueue_event(event("AWAITING_PAYMENT", order=f"b-{i}"))
    runtime.queues.enqueue_poll("alixpay", "b-0", "operator")
    assert runtime.queues.enqueue_sweep()
    worker = make_worker(runtime)
    assert worker.dequeue_job_and_maintain_ttl(timeout=1)[0].id == "sweep"
