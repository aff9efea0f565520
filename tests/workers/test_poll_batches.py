"""The sweep's polls in batches (``workers.polls``): bounded concurrency per provider over the
pooled session, answers applied together, failures kept to their order, the poll lock,
providers kept apart, and the sweep's hand-out. Jobs run in real RQ burst workers where
the job itself is under test; the AliX sandbox counts the order-detail reads in flight."""

from __future__ import annotations

import contextvars
import dataclasses
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Keys, alix_sandbox, alix_settings, fuspay_settings
from dbfaults import poisoned
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from config import Settings
from devkit.alixpay.counting import CountingAlix
from devkit.fuspay.sandbox import FuspaySandbox
from orders.db import make_engine
from orders.migrate import upgrade
from orders.providers import STATUS_MAPS
from orders.store import Store
from workers import jobs, polls
from workers.pooling import BoundedAdapter
from workers.queue import POLLS, poll_batch_job_id
from workers.services import Services, build_services
from workers.worker import make_worker

CONCURRENCY = 3


@pytest.fixture
def alix(keys: Keys) -> Iterator[CountingAlix]:
    with alix_sandbox(keys, CountingAlix) as sb:
        yield sb  # type: ignore[misc]


@pytest.fixture
def rt(
    database_url: str, redis: Redis, keys: Keys, alix: CountingAlix, fuspay_sandbox: FuspaySandbox
) -> Iterator[Services]:
    port = redis.connection_pool.connection_kwargs["port"]
    settings = Settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        providers={"alixpay": alix_settings(keys, alix.url), "fuspay": fuspay_settings(fuspay_sandbox.url)},
        poll_concurrency=CONCURRENCY,
        poll_batch=2,
    )
    runtime = build_services(settings, redis=redis)  # the pooled, bounded session of a process
    token = runtime.install()
    yield runtime
    token.var.reset(token)
    runtime.store.engine.dispose()


def open_alix(rt: Services, alix: CountingAlix, ids: Sequence[str], to: str = "PAYMENT_COMPLETED") -> None:
    """Orders at AWAITING_PAYMENT in the store, at ``to`` at AliX (callbacks are not sent);
    the sandbox's gauge counts from here."""
    for oid in ids:
        alix.create_order(oid, 1000)
    rt.store.apply([rt.adapters["alixpay"].poll(oid) for oid in ids])
    for oid in ids:
        alix.advance(oid, to)
    alix.reset()


def open_fuspay(rt: Services, fuspay: FuspaySandbox, ids: Sequence[str]) -> None:
    fuspay.set_switches(drop=True)
    for oid in ids:
        fuspay.create_order(oid, crypto_amount=100)
    rt.store.apply([rt.adapters["fuspay"].poll(oid) for oid in ids])
    for oid in ids:
        fuspay.advance(oid, "event.sell.received.crypto")


def status(rt: Services, provider: str, oid: str) -> str:
    return rt.store.order_view(provider, oid).status


def work(rt: Services) -> None:
    make_worker(rt).work(burst=True, with_scheduler=True)


def in_thread(call: Any) -> threading.Thread:
    thread = threading.Thread(target=contextvars.copy_context().run, args=(call,))
    thread.start()
    return thread


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.01)


def test_the_process_session_is_pooled_and_bounded(rt: Services) -> None:
    session = rt.adapters["alixpay"].client.session
    adapter = session.get_adapter("http://127.0.0.1/")
    assert isinstance(adapter, BoundedAdapter) and adapter.limit == CONCURRENCY
    assert adapter._pool_maxsize >= CONCURRENCY  # keep-alive connections for every slot
    assert rt.adapters["fuspay"].client.session is session


def test_a_batch_is_fetched_with_bounded_concurrency_and_applied_together(
    rt: Services, alix: CountingAlix
) -> None:
    ids = [f"b-{i:02}" for i in range(12)]
    open_alix(rt, alix, ids)
    alix.set_switches(detail_delay=0.2)
    commits: list[int] = []
    rt.store.observers["test"] = lambda outcomes: commits.append(len(outcomes))
    assert rt.queues.enqueue_poll_batch("alixpay", ids)
    work(rt)
    job = Job.fetch(poll_batch_job_id("alixpay", ids), connection=rt.redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == {
        "orders": 12,
        "applied": 12,
        "unchanged": 0,
        "failed": 0,
        "deferred": 0,
        "skipped": 0,
    }
    assert alix.peak == CONCURRENCY  # never more in flight, and the bound was used
    assert commits == [12]  # the twelve answers in one transaction
    assert all(status(rt, "alixpay", oid) == "PROCESSING" for oid in ids)
    assert rt.metrics.pending()[("rampwatch_polls", "alixpay|applied")] == 12


def test_batches_of_one_provider_share_the_process_bound(rt: Services, alix: CountingAlix) -> None:
    """Two batches at once (and a single poll beside them) in one process: still at most
    RAMPWATCH_POLL_CONCURRENCY reads in flight at AliX, though each batch has that many threads."""
    ids = [f"s-{i:02}" for i in range(13)]
    open_alix(rt, alix, ids)
    alix.set_switches(detail_delay=0.15)
    threads = [
        in_thread(lambda: polls.poll_batch(rt, "alixpay", ids[:6])),
        in_thread(lambda: polls.poll_batch(rt, "alixpay", ids[6:12])),
        in_thread(lambda: jobs.poll_order("alixpay", ids[12], "operator")),
    ]
    for thread in threads:
        thread.join(20)
    assert alix.peak == CONCURRENCY and alix.reads == 13
    assert all(status(rt, "alixpay", oid) == "PROCESSING" for oid in ids)


def test_a_failing_order_does_not_fail_its_neighbours(rt: Services, alix: CountingAlix) -> None:
    ids = ["ok-1", "down", "garbled", "ok-2", "poison", "ok-3"]
    open_alix(rt, alix, ids)
    alix.set_switches(order_id="down", detail_fail=True)  # 503: the provider cannot answer now
    alix.set_switches(order_id="garbled", detail_garbage=True)  # an HTML page: a data error
    commits: list[int] = []
    rt.store.observers["test"] = lambda outcomes: commits.append(len(outcomes))
    with poisoned(rt.store.engine, '"poison"'):  # the database refuses the poison's answer
        rt.queues.enqueue_poll_batch("alixpay", [*ids, "unknown-at-alix"])
        work(rt)
    job = Job.fetch(
        poll_batch_job_id("alixpay", [*ids, "unknown-at-alix"]),
        connection=rt.redis,
        serializer=JSONSerializer,
    )
    assert job.get_status() == JobStatus.FINISHED  # the batch did not fail
    report = job.return_value()
    assert (report["applied"], report["failed"]) == (3, 4)
    assert commits == [1, 1, 1]  # the four together failed; one by one, three committed
    for oid in ("ok-1", "ok-2", "ok-3"):
        assert status(rt, "alixpay", oid) == "PROCESSING"
    for oid in ("down", "garbled", "poison"):
        order = rt.store.order_view("alixpay", oid)
        assert order.status == "AWAITING_PAYMENT" and order.poll_attempts == 1  # backed off
    assert rt.metrics.pending()[("rampwatch_polls", "alixpay|failed")] == 4


def test_the_poll_lock_of_an_order_still_holds(rt: Services, alix: CountingAlix, redis: Redis) -> None:
    ids = ["l-1", "l-2", "l-3"]
    open_alix(rt, alix, ids)
    elsewhere = rt.queues.poll_lock("alixpay", "l-2")
    assert rt.queues.take_poll_lock(elsewhere, None)  # another poll of l-2 is under way
    report = polls.poll_batch(rt, "alixpay", ids)
    assert (report["applied"], report["deferred"]) == (2, 1)
    assert alix.reads == 2  # l-2 was not asked about
    assert status(rt, "alixpay", "l-2") == "AWAITING_PAYMENT"
    scheduled = ScheduledJobRegistry(POLLS, connection=redis, serializer=JSONSerializer)
    assert scheduled.count == 1  # its poll runs later: nothing is lost
    assert elsewhere.owned()  # the batch left the other poll's lock alone...
    for oid in ("l-1", "l-3"):  # ...and released its own
        lock = rt.queues.poll_lock("alixpay", oid)
        assert lock.acquire(blocking=False)
        lock.release()


def test_a_slow_provider_does_not_hold_back_another_providers_batch(
    rt: Services, alix: CountingAlix, fuspay_sandbox: FuspaySandbox
) -> None:
    slow = [f"slow-{i}" for i in range(6)]
    fast = [f"fast-{i}" for i in range(4)]
    open_alix(rt, alix, slow)
    open_fuspay(rt, fuspay_sandbox, fast)
    alix.set_switches(detail_delay=1.0)
    thread = in_thread(lambda: polls.poll_batch(rt, "alixpay", slow))
    wait_until(lambda: alix.in_flight == CONCURRENCY)  # AliX's slots are all taken
    report = polls.poll_batch(rt, "fuspay", fast)
    # Done while AliX's batch (two rounds of 1 s answers) still runs: not behind it.
    assert report["applied"] == 4 and thread.is_alive()
    thread.join(10)
    assert all(status(rt, "alixpay", oid) == "PROCESSING" for oid in slow)


def test_a_slow_provider_holds_a_batch_for_its_budget_at_most(rt: Services, alix: CountingAlix) -> None:
    ids = [f"t-{i}" for i in range(9)]
    open_alix(rt, alix, ids)
    alix.set_switches(detail_delay=0.5)
    report = polls.poll_batch(rt, "alixpay", ids, budget=0.3)
    assert (report["applied"], report["skipped"]) == (3, 6)
    skipped = [oid for oid in ids if status(rt, "alixpay", oid) == "AWAITING_PAYMENT"]
    assert len(skipped) == 6
    assert all(rt.store.order_view("alixpay", oid).poll_attempts == 0 for oid in skipped)  # not failed


def test_a_database_outage_keeps_the_batch_and_releases_its_locks(
    redis: Redis, keys: Keys, alix: CountingAlix, tmp_path: Path
) -> None:
    """SQLite's write lock held outside for the whole job: the answers cannot be written
    (PostgreSQL's outages: tests/faults)."""
    import sqlite3

    url = f"sqlite:///{tmp_path / 'outage.sqlite3'}"
    upgrade(url)
    port = redis.connection_pool.connection_kwargs["port"]
    settings = Settings(
        database_url=url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        providers={"alixpay": alix_settings(keys, alix.url)},
        poll_concurrency=CONCURRENCY,
    )
    store = Store(make_engine(url, wait=0.2), STATUS_MAPS, {})
    rt = build_services(settings, redis=redis, store=store)
    token = rt.install()
    ids = ["db-1", "db-2"]
    open_alix(rt, alix, ids)
    held = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0, check_same_thread=False)
    held.execute("BEGIN IMMEDIATE")
    job_id = poll_batch_job_id("alixpay", ids)
    seen: dict[str, Any] = {}

    def release_once_failed() -> None:
        """While the worker waits for the database: the job kept its retry, the locks are free."""
        try:
            wait_until(
                lambda: (
                    Job.fetch(job_id, connection=rt.redis, serializer=JSONSerializer).get_status()
                    == JobStatus.SCHEDULED
                ),
                30,
            )
            job = Job.fetch(job_id, connection=rt.redis, serializer=JSONSerializer)
            seen["retries_left"] = job.retries_left
            seen["locks_free"] = []
            for oid in ids:
                lock = rt.queues.poll_lock("alixpay", oid)
                seen["locks_free"].append(lock.acquire(blocking=False))
                lock.release()
        finally:
            held.rollback()
            held.close()

    rt.queues.enqueue_poll_batch("alixpay", ids)
    releaser = in_thread(release_once_failed)
    make_worker(rt).work(burst=True, with_scheduler=False)  # waits for the database, then goes on
    releaser.join(30)
    assert seen == {"retries_left": 2, "locks_free": [True, True]}  # no retry spent, locks released
    for oid in ids:
        assert rt.store.order_view("alixpay", oid).poll_attempts == 0  # not the orders' fault
    assert polls.poll_batch(rt, "alixpay", ids)["applied"] == 2
    token.var.reset(token)
    store.engine.dispose()


def test_the_sweep_hands_out_batches_alternating_providers(
    rt: Services, alix: CountingAlix, fuspay_sandbox: FuspaySandbox, redis: Redis
) -> None:
    a_ids = [f"a-{i}" for i in range(5)]
    f_ids = [f"f-{i}" for i in range(3)]
    open_alix(rt, alix, a_ids)
    open_fuspay(rt, fuspay_sandbox, f_ids)
    later = datetime.now(UTC) + timedelta(hours=1)
    rt.store.clock = lambda: later
    rt.settings = dataclasses.replace(rt.settings, sweep_batch=3)
    result = jobs.sweep()
    assert (result["due"], result["queued"], result["batches"]) == (8, 8, 5)  # claims of 3, 3, 2
    queued = [
        Job.fetch(i, connection=redis, serializer=JSONSerializer).args
        for i in Queue(POLLS, connection=redis, serializer=JSONSerializer).job_ids
    ]
    assert [provider for provider, _, _ in queued] == ["alixpay", "fuspay", "alixpay", "fuspay", "alixpay"]
    assert all(len(ids) <= 2 for _, ids, _ in queued)
    assert sorted(oid for _, ids, _ in queued for oid in ids) == sorted(a_ids + f_ids)
    rt.store.clock = lambda: datetime.now(UTC)
    work(rt)
    assert all(status(rt, "alixpay", oid) == "PROCESSING" for oid in a_ids)
    assert all(status(rt, "fuspay", oid) == "PAYMENT_RECEIVED" for oid in f_ids)


def test_the_sweep_claims_nothing_while_the_polls_queue_is_deep(rt: Services, alix: CountingAlix) -> None:
    ids = [f"d-{i}" for i in range(6)]
    open_alix(rt, alix, ids)
    later = datetime.now(UTC) + timedelta(hours=1)
    rt.store.clock = lambda: later
    rt.settings = dataclasses.replace(rt.settings, sweep_batch=1)  # the queue may hold 4 orders
    for i in range(2):  # two batches of two already wait
        rt.queues.enqueue_poll_batch("alixpay", [f"x-{i}-a", f"x-{i}-b"])
    assert rt.queues.queued_polls(100) == 4
    assert jobs.sweep()["due"] == 0
    rt.queues.enqueue_poll("alixpay", "single", "operator")  # any other job counts one
    assert rt.queues.queued_polls(100) == 5
