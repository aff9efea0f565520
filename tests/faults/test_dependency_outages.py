"""Workers and the clock outlive their dependencies: Redis restarts, database outages.

Real ``rampwatch worker`` and ``rampwatch clock`` processes (``faultkit``). Each test
says how long the system may take to reach the sandbox's truth once the fault ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import POSTGRES_URL, Keys
from faultkit import Faults, fault_stack, postgres_cut, wait_for
from scenarios import alixpay_sell
from sqlalchemy import create_engine

from devkit.alixpay.sandbox import AlixSandbox
from devkit.changelly.sandbox import ChangellySandbox
from devkit.fuspay.sandbox import FuspaySandbox
from workers.queue import poll_job_id


@pytest.fixture
def faults(
    tmp_path: Path,
    keys: Keys,
    sandbox: AlixSandbox,
    changelly_sandbox: ChangellySandbox,
    fuspay_sandbox: FuspaySandbox,
) -> Iterator[Faults]:
    yield from fault_stack(tmp_path, keys, sandbox, changelly_sandbox, fuspay_sandbox)


@pytest.fixture
def pg_faults(
    tmp_path: Path,
    keys: Keys,
    sandbox: AlixSandbox,
    changelly_sandbox: ChangellySandbox,
    fuspay_sandbox: FuspaySandbox,
) -> Iterator[Faults]:
    yield from fault_stack(tmp_path, keys, sandbox, changelly_sandbox, fuspay_sandbox, postgres=True)


def create(faults: Faults, order_ids: list[str]) -> None:
    for oid in order_ids:
        resp = faults.api("POST", "/api/orders/alixpay", json=alixpay_sell(oid))
        assert resp.status_code == 201, resp.text


def callbacks_recorded(faults: Faults, oid: str) -> list[str]:
    """The provider statuses of the callbacks the store holds for an order."""
    view = faults.api("GET", f"/api/orders/alixpay/{oid}").json()
    return [e["provider_status"] for e in view["timeline"] if e["source"] == "callback"]


def started(faults: Faults, job_id: str) -> None:
    wait_for(f"job {job_id} running", lambda: faults.job_status(job_id) == "started", 20, every=0.05)


def test_a_redis_restart_mid_job_kills_no_worker_or_clock_and_loses_no_accepted_callback(
    faults: Faults,
) -> None:
    """Redis (AOF, everysec) stops for 5 s while a worker finishes a job and five accepted
    callbacks wait in its queue; the worker used to quit on its next Redis write."""
    orders = [f"r{i}" for i in range(6)]
    create(faults, orders)
    worker = faults.worker("w1")
    clock = faults.clock()
    wait_for("the worker registered", lambda: faults.redis.exists("rq:worker:w1") == 1, 20)
    # The job in hand when Redis goes: a poll the provider answers slowly.
    faults.sandbox.set_switches("r0", drop=True, detail_delay=1.5)
    faults.sandbox.advance("r0", "PAYMENT_COMPLETED")
    assert faults.api("POST", "/api/orders/alixpay/r0/reconcile", ops=True).status_code == 202
    started(faults, poll_job_id("alixpay", "r0"))
    # Callbacks accepted (200) while that poll runs: they wait in Redis for the worker.
    for oid in orders[1:]:
        faults.sandbox.advance(oid, "SUCCESS")
    assert faults.sandbox.wait_idle(10)
    accepted = {d[0] for d in faults.sandbox.deliveries if d[2] == 200}
    assert accepted == set(orders[1:])

    lived = []
    faults.restart_redis(5.0, during=lambda: (time.sleep(4.0), lived.append(worker.alive and clock.alive)))
    assert lived == [True], faults.fleet.exited()

    # Within 30 s of Redis being back: every accepted callback is in the store, and the
    # slow poll's answer too.
    wait_for(
        "every accepted callback and the slow poll applied",
        lambda: (
            faults.status("alixpay", "r0") == "PROCESSING"
            and all("SUCCESS" in callbacks_recorded(faults, oid) for oid in accepted)
        ),
        30,
    )
    assert all(faults.status("alixpay", oid) == "SUCCESS" for oid in accepted)
    assert faults.fleet.exited() == []
    assert "quitting" not in worker.output()
    # Callbacks no longer wait behind the slow poll (the stream's drainer applied them at
    # once), so all may be done before the worker's next Redis call logs the recovery.
    wait_for("the worker to see Redis back", lambda: "redis is back" in worker.output(), 10)


def test_a_locked_sqlite_database_holds_the_worker_and_the_work_is_applied_after(faults: Faults) -> None:
    """An outside transaction holds SQLite's write lock for 6 s while callbacks arrive."""
    orders = [f"s{i}" for i in range(4)]
    create(faults, orders)
    worker = faults.worker("w1")
    wait_for("the worker registered", lambda: faults.redis.exists("rq:worker:w1") == 1, 20)
    outside = create_engine(faults.database_url, isolation_level=None)
    with outside.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        for oid in orders:
            faults.sandbox.advance(oid, "SUCCESS")
        assert faults.sandbox.wait_idle(10)
        time.sleep(6.0)
        assert worker.alive
        conn.exec_driver_sql("ROLLBACK")
    outside.dispose()
    wait_for(
        "every callback applied after the lock",
        lambda: all(faults.status("alixpay", oid) == "SUCCESS" for oid in orders),
        15,
    )
    assert faults.fleet.exited() == []


@pytest.mark.skipif(
    not POSTGRES_URL, reason="PostgreSQL runs only with RAMPWATCH_TEST_POSTGRES_URL, as in the suite"
)
def test_postgres_connections_cut_for_6s_kill_no_worker_and_the_work_is_applied_after(
    pg_faults: Faults,
) -> None:
    """The worker's database refuses connections and every open one is terminated for 6 s
    (pg_terminate_backend) while callbacks arrive; applied within 10 s of its return."""
    faults = pg_faults
    orders = [f"p{i}" for i in range(4)]
    create(faults, orders)
    worker = faults.worker("w1")
    wait_for("the worker registered", lambda: faults.redis.exists("rq:worker:w1") == 1, 20)
    # The receiver's store shares that database: read the results through a new engine later.
    faults.runtime.store.engine.dispose()
    with postgres_cut(faults, every=0.1):
        time.sleep(0.5)
        for oid in orders:
            faults.sandbox.advance(oid, "SUCCESS")
        assert faults.sandbox.wait_idle(10)
        time.sleep(5.5)
        assert worker.alive
    back = time.monotonic()
    wait_for(
        "every callback applied after the outage",
        lambda: all(faults.status("alixpay", oid) == "SUCCESS" for oid in orders),
        20,
    )
    assert time.monotonic() - back < 10, "applied, but not within 10 s of the database's return"
    assert faults.fleet.exited() == []
