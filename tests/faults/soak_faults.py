"""The long fault runs: `make soak` runs them (``pytest tests/faults/soak_faults.py``).

Not collected by ``make test`` (the file name does not start with ``test_``): each one
lasts from half a minute to a minute and a half. Real ``rampwatch worker`` and
``rampwatch clock`` processes (``faultkit``); each test states the time the system may
take, without an operator, to reach the sandboxes' truth once the fault is over.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import POSTGRES_URL, Keys
from faultkit import Faults, fault_stack, postgres_cut, wait_for
from sqlalchemy import create_engine

from workers.queue import poll_job_id


def _stack(request: pytest.FixtureRequest, tmp_path: Path, keys: Keys, **options: bool) -> Iterator[Faults]:
    yield from fault_stack(
        tmp_path,
        keys,
        request.getfixturevalue("sandbox"),
        request.getfixturevalue("changelly_sandbox"),
        request.getfixturevalue("fuspay_sandbox"),
        **options,
    )


@pytest.fixture
def faults(request: pytest.FixtureRequest, tmp_path: Path, keys: Keys) -> Iterator[Faults]:
    yield from _stack(request, tmp_path, keys)


@pytest.fixture
def no_aof(request: pytest.FixtureRequest, tmp_path: Path, keys: Keys) -> Iterator[Faults]:
    yield from _stack(request, tmp_path, keys, aof=False)


@pytest.fixture
def pg_faults(request: pytest.FixtureRequest, tmp_path: Path, keys: Keys) -> Iterator[Faults]:
    yield from _stack(request, tmp_path, keys, postgres=True)


def _slow_poll_in_flight(faults: Faults, order_id: str) -> None:
    """A poll of ``order_id`` running in a worker, its provider answering in 1.5 s."""
    faults.sandbox.set_switches(order_id, drop=True, detail_delay=1.5)
    faults.sandbox.advance(order_id, "PAYMENT_COMPLETED")
    assert faults.api("POST", f"/api/orders/alixpay/{order_id}/reconcile", ops=True).status_code == 202
    job_id = poll_job_id("alixpay", order_id)
    wait_for("the poll running", lambda: faults.job_status(job_id) == "started", 20, every=0.05)


@pytest.mark.parametrize(
    ("down_for", "crash"), [(60.0, False), (5.0, True)], ids=["stopped-60s", "crashed-5s"]
)
def test_redis_with_aof_down_while_work_is_in_flight(faults: Faults, down_for: float, crash: bool) -> None:
    """No process exits, and every callback answered 200 is applied within 30 s of Redis's
    return. ``crashed``: SIGKILL, more than a second after the last accepted callback (the
    ``everysec`` bound on what a crash may lose)."""
    orders = [f"a{i}" for i in range(6)]
    for oid in orders:
        faults.create("alixpay", oid)
    worker, clock = faults.worker("w1"), faults.clock()
    faults.registered("w1")
    _slow_poll_in_flight(faults, "a0")
    for oid in orders[1:]:
        faults.sandbox.advance(oid, "SUCCESS")
    assert faults.sandbox.wait_idle(10)
    accepted = {d[0] for d in faults.sandbox.deliveries if d[2] == 200}
    assert accepted == set(orders[1:])
    if crash:
        time.sleep(1.5)
    faults.restart_redis(down_for, kill=crash)
    assert worker.alive and clock.alive, faults.fleet.exited()
    wait_for(
        "every accepted callback recorded and applied",
        lambda: all(
            "SUCCESS" in faults.callbacks_recorded("alixpay", oid)
            and faults.status("alixpay", oid) == "SUCCESS"
            for oid in accepted
        ),
        30,
    )
    wait_for("the poll in flight applied", lambda: faults.status("alixpay", "a0") == "PROCESSING", 30)
    assert faults.fleet.exited() == []


@pytest.mark.parametrize("down_for", [5.0, 60.0])
def test_redis_without_aof_restarts_empty_and_the_sweep_brings_every_order_back(
    no_aof: Faults, down_for: float
) -> None:
    """Without persistence the callbacks waiting in Redis are gone with it (so run Redis
    with AOF); the orders we know still reach the truth through the clock's sweep, within
    30 s of Redis's return (the poll lease is 5 s here), and no process exits."""
    faults = no_aof
    orders = [f"n{i}" for i in range(6)]
    for oid in orders:
        faults.create("alixpay", oid)
    worker, clock = faults.worker("w1"), faults.clock()
    faults.registered("w1")
    _slow_poll_in_flight(faults, "n0")
    for oid in orders[1:]:
        faults.sandbox.advance(oid, "SUCCESS")
    assert faults.sandbox.wait_idle(10)
    faults.restart_redis(down_for)
    assert worker.alive and clock.alive, faults.fleet.exited()
    wait_for(
        "every order at the truth",
        lambda: (
            faults.status("alixpay", "n0") == "PROCESSING"
            and all(faults.status("alixpay", oid) == "SUCCESS" for oid in orders[1:])
        ),
        30,
    )
    assert faults.fleet.exited() == []


def test_sigterm_during_a_redis_outage_stops_the_worker_and_another_finishes_its_job(faults: Faults) -> None:
    """A worker asked to stop while Redis is down exits within 10 s instead of waiting for
    Redis. The job it had in hand could not be marked done (Redis was down): another worker
    takes it over and finishes it within 60 s of Redis's return, instead of RQ leaving it
    STARTED for its maintenance pass."""
    faults.create("alixpay", "t0")
    w1 = faults.worker("w1")
    faults.registered("w1")
    _slow_poll_in_flight(faults, "t0")
    job_id = poll_job_id("alixpay", "t0")
    faults.redis_server.halt()
    time.sleep(0.5)
    stopped = time.monotonic()
    code = w1.terminate(timeout=15)
    assert time.monotonic() - stopped < 10
    assert code == 0, w1.output()[-3000:]
    faults.redis_server.start()
    back = time.monotonic()
    assert faults.job_status(job_id) == "started"  # as RQ saw it when Redis went down
    faults.worker("w2")
    wait_for(
        "the stopped worker's job finished by another",
        lambda: faults.job_status(job_id) == "finished",
        back + 60 - time.monotonic(),
    )
    assert faults.status("alixpay", "t0") == "PROCESSING"
    assert faults.fleet.exited() == []


@pytest.mark.skipif(
    not POSTGRES_URL, reason="PostgreSQL runs only with RAMPWATCH_TEST_POSTGRES_URL, as in the suite"
)
def test_a_postgres_outage_longer_than_the_retry_schedule_loses_nothing(pg_faults: Faults) -> None:
    """60 s without the database (connections refused and terminated): the worker waits,
    and every accepted callback is applied within 20 s of the database's return (RQ's retry
    schedule alone, 1, 5, 30, 120 s, would have put the next try two minutes later)."""
    faults = pg_faults
    orders = [f"g{i}" for i in range(4)]
    for oid in orders:
        faults.create("alixpay", oid)
    worker = faults.worker("w1")
    faults.registered("w1")
    faults.runtime.store.engine.dispose()
    with postgres_cut(faults, every=0.2):
        time.sleep(0.5)
        for oid in orders:
            faults.sandbox.advance(oid, "SUCCESS")
        assert faults.sandbox.wait_idle(10)
        time.sleep(60)
        assert worker.alive
    wait_for(
        "every callback applied", lambda: all(faults.status("alixpay", o) == "SUCCESS" for o in orders), 20
    )
    assert faults.fleet.exited() == []


def test_a_sqlite_lock_held_past_the_busy_timeout_loses_nothing(faults: Faults) -> None:
    """An outside transaction holds SQLite's write lock for 35 s, past the store's 30 s
    busy timeout, so applies fail with "database is locked": the worker waits, and every
    accepted callback is applied within 15 s of the lock's release."""
    orders = [f"l{i}" for i in range(4)]
    for oid in orders:
        faults.create("alixpay", oid)
    worker = faults.worker("w1")
    faults.registered("w1")
    outside = create_engine(faults.database_url, isolation_level=None)
    with outside.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        for oid in orders:
            faults.sandbox.advance(oid, "SUCCESS")
        assert faults.sandbox.wait_idle(10)
        time.sleep(35)
        assert worker.alive
        conn.exec_driver_sql("ROLLBACK")
    outside.dispose()
    wait_for(
        "every callback applied", lambda: all(faults.status("alixpay", o) == "SUCCESS" for o in orders), 15
    )
    assert faults.fleet.exited() == []
    assert "database unavailable; waiting for it" in worker.output()


PROVIDER_FAULTS = [
    ("5xx", {"detail_fail": True}),
    ("429", {"detail_throttle": True}),
    ("garbage", {"detail_garbage": True}),
    ("redirect", {"detail_redirect": True}),
    ("timeout", {"detail_delay": 3.0}),  # the clients' timeout is 2 s here
]


def test_provider_apis_answering_5xx_429_garbage_redirects_and_timeouts(faults: Faults) -> None:
    """Every provider's order-detail API plays each fault for 5 s while its callbacks are
    all dropped (only polls can tell us anything). No process exits, and within 30 s of the
    last fault every order is at its sandbox's truth."""
    faults.create("alixpay", "pa")
    faults.create("fuspay", "pf")
    faults.create("changelly", "pc")
    worker, clock = faults.worker("w1"), faults.clock()
    faults.registered("w1")
    sandboxes = {"alixpay": faults.sandbox, "fuspay": faults.fuspay, "changelly": faults.changelly}
    for sandbox in sandboxes.values():
        sandbox.set_switches(drop=True)
    faults.sandbox.advance("pa", "SUCCESS")
    faults.fuspay.advance("pf", "event.sell.received.crypto")
    faults.fuspay.advance("pf", "event.sell.credited.fiat", payout_status="SUCCESSFUL")
    faults.changelly.advance("pc", "pending")
    faults.changelly.advance("pc", "complete")
    for _name, switches in PROVIDER_FAULTS:
        for sandbox in sandboxes.values():
            sandbox.set_switches(**switches)
        time.sleep(5.0)
        assert worker.alive and clock.alive, faults.fleet.exited()
        for sandbox in sandboxes.values():
            sandbox.set_switches(reset=True)
            sandbox.set_switches(drop=True)
    wait_for(
        "every order at the truth",
        lambda: (
            [faults.status(p, o) for p, o in (("alixpay", "pa"), ("fuspay", "pf"), ("changelly", "pc"))]
            == ["SUCCESS"] * 3
        ),
        30,
    )
    assert faults.fleet.exited() == []


def test_two_clocks_one_leads_and_a_killed_leader_is_replaced(faults: Faults) -> None:
    """Two clocks: one leads, the other waits. SIGKILL the leader: the other leads within
    15 s (the lock's TTL is 10 s here) and the sweep brings an order whose callbacks are all
    dropped to the truth within 30 s of the kill."""
    faults.create("alixpay", "c0")
    faults.worker("w1")
    clocks = [faults.clock("clock-1"), faults.clock("clock-2")]
    faults.registered("w1")

    def leaders() -> list[str]:
        # "clock: leader, enqueueing ..." at start, "clock: took over as leader, enqueueing ..."
        return [c.name for c in clocks if "leader, enqueueing" in c.output()]

    wait_for("a clock leading", lambda: len(leaders()) == 1, 20)
    time.sleep(3.0)
    assert len(leaders()) == 1  # the other one waits
    leader = next(c for c in clocks if c.name in leaders())
    follower = next(c for c in clocks if c is not leader)
    faults.sandbox.set_switches(drop=True)
    leader.kill()
    killed = time.monotonic()
    faults.sandbox.advance("c0", "SUCCESS")
    wait_for("the other clock leading", lambda: "took over as leader" in follower.output(), 15)
    wait_for(
        "the dropped order swept to the truth",
        lambda: faults.status("alixpay", "c0") == "SUCCESS",
        killed + 30 - time.monotonic(),
    )
    assert faults.fleet.exited() == []
    assert requests.get(f"{faults.base}/healthz", timeout=5).status_code == 200
