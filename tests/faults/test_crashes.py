"""No job blocks an order after a crash: a SIGKILLed worker's jobs are taken over soon.

Each worker runs in a process group of its own and ``kill()`` SIGKILLs all of it, as a
host loses a crashed dyno. RQ alone recovered such a job only in its maintenance pass
(about ten minutes later), counted it as "already accepted" in between, and a worker
restarted after the crash ran no scheduler for delayed jobs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import Keys
from faultkit import Faults, fault_stack, wait_for
from scenarios import alixpay_sell
from sqlalchemy import create_engine, select

from devkit.alixpay.sandbox import AlixSandbox
from devkit.changelly.sandbox import ChangellySandbox
from devkit.fuspay.sandbox import FuspaySandbox
from devkit.kit import compact
from orders.models import EventRecord, Order
from workers.queue import Queues, poll_job_id
from workers.stream import EventStream


@pytest.fixture
def faults(
    tmp_path: Path,
    keys: Keys,
    sandbox: AlixSandbox,
    changelly_sandbox: ChangellySandbox,
    fuspay_sandbox: FuspaySandbox,
) -> Iterator[Faults]:
    yield from fault_stack(tmp_path, keys, sandbox, changelly_sandbox, fuspay_sandbox)


def create(faults: Faults, order_ids: list[str]) -> None:
    for oid in order_ids:
        resp = faults.api("POST", "/api/orders/alixpay", json=alixpay_sell(oid))
        assert resp.status_code == 201, resp.text


def registered(faults: Faults, name: str) -> None:
    wait_for(f"worker {name} registered", lambda: faults.redis.exists(f"rq:worker:{name}") == 1, 20)


def read_by_a_consumer(faults: Faults) -> None:
    """Wait until a worker has read a callback from the stream (pending, not applied)."""
    wait_for(
        "a callback read by a worker",
        lambda: EventStream(faults.redis).depths()["callbacks_pending"] == 1,
        20,
        every=0.05,
    )


def test_a_callback_read_by_a_killed_worker_is_taken_over_and_applied_once(faults: Faults) -> None:
    """w1 reads the callback and is SIGKILLed mid-apply (it waits on SQLite's write lock):
    the entry stays pending; w2 takes it over after RAMPWATCH_STREAM_CLAIM_IDLE and applies
    it once. AliX's identical redelivery meanwhile is accepted and recorded as nothing."""
    create(faults, ["k1"])
    w1 = faults.worker("w1")
    registered(faults, "w1")
    outside = create_engine(faults.database_url, isolation_level=None)
    with outside.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the apply waits on SQLite's write lock
        faults.sandbox.advance("k1", "SUCCESS")
        assert faults.sandbox.wait_idle(10)
        assert [d[2] for d in faults.sandbox.deliveries] == [200]
        read_by_a_consumer(faults)
        time.sleep(0.3)
        w1.kill()  # mid-apply
        conn.exec_driver_sql("ROLLBACK")
    outside.dispose()
    assert EventStream(faults.redis).depths()["callbacks_pending"] == 1  # nobody acknowledged it

    # AliX sends the identical IPN again: accepted (durably queued) like any other.
    ipn = compact(faults.sandbox.signed_order("k1"))
    resp = requests.post(
        f"{faults.base}/webhooks/alixpay", data=ipn, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert resp.status_code == 200, resp.text

    faults.worker("w2")
    wait_for(
        "the callback applied by another worker", lambda: faults.status("alixpay", "k1") == "SUCCESS", 30
    )
    wait_for(
        "every entry settled",
        lambda: (
            EventStream(faults.redis).depths()
            == {"callbacks": 0, "callbacks_pending": 0, "callbacks_dead": 0}
        ),
        30,
    )
    with faults.runtime.store.sessions() as s:
        applied = s.scalars(
            select(EventRecord.decision)
            .join(Order)
            .where(Order.external_order_id == "k1", EventRecord.source == "callback")
        ).all()
    assert applied.count("applied") == 1  # exactly once, whatever was delivered twice
    assert faults.fleet.exited() == []


def test_a_poll_killed_mid_flight_is_finished_by_another_worker_and_delayed_jobs_are_not_late(
    faults: Faults,
) -> None:
    """w1 (which runs the scheduler) is SIGKILLed mid-poll; w2 starts at once. The poll is
    applied by w2 within a minute, and twelve delayed jobs due 5 s later run within 15 s of
    being due (w2 takes the dead scheduler's lock over)."""
    delayed = [f"d{i:02}" for i in range(12)]
    create(faults, ["m0", *delayed])
    faults.sandbox.set_switches(drop=True)  # only polls can tell us anything now
    for oid in ["m0", *delayed]:
        faults.sandbox.advance(oid, "SUCCESS")
    w1 = faults.worker("w1")
    registered(faults, "w1")
    time.sleep(1.0)  # w1's scheduler holds the scheduler lock
    faults.sandbox.set_switches("m0", detail_delay=1.5)
    assert faults.api("POST", "/api/orders/alixpay/m0/reconcile", ops=True).status_code == 202
    job_id = poll_job_id("alixpay", "m0")
    wait_for("the poll running", lambda: faults.job_status(job_id) == "started", 20, every=0.05)
    time.sleep(0.5)
    w1.kill()  # mid-poll: the provider has not answered yet
    killed = time.monotonic()
    faults.sandbox.set_switches("m0", detail_delay=None)

    queues = Queues(faults.redis)
    for oid in delayed:
        assert queues.enqueue_deferred_poll("alixpay", oid, "test") == "scheduled"
    due = time.monotonic() + 5
    faults.worker("w2")

    wait_for(
        "the twelve delayed polls applied",
        lambda: all(faults.status("alixpay", oid) == "SUCCESS" for oid in delayed),
        due + 15 - time.monotonic(),
    )
    wait_for(
        "the killed poll finished by another worker",
        lambda: faults.status("alixpay", "m0") == "SUCCESS",
        killed + 60 - time.monotonic(),
    )
    assert faults.fleet.exited() == []
