"""The callback stream (``workers.stream``) and its consumers (``workers.drain``): real Redis,
real store (SQLite, and PostgreSQL when configured), real workers.

What the RQ job per callback gave must still hold: exactly once under re-delivery, a crashed
consumer's entries taken over, a poisoned event isolated and dead-lettered, a database
outage counting against nothing, the stream trimmed of acknowledged entries only."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import Keys, alix_env
from dbfaults import poisoned
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import func, select, update

from orders.events import Event
from orders.models import EventRecord, Order
from workers.deadletters import DeadEvents, sources
from workers.drain import Drainer
from workers.queue import connect
from workers.services import Services, build_services
from workers.stream import DEAD, STREAM, EventStream
from workers.worker import make_worker

sys.path.insert(0, str(Path(__file__).parent))
from test_jobs import event, make_settings


@pytest.fixture
def runtime(database_url: str, redis: Redis, keys: Keys):
    settings = dataclasses.replace(
        make_settings(database_url, redis, keys),
        stream_claim_idle=0.2,
        stream_max_deliveries=3,
        stream_batch=50,
    )
    rt = build_services(settings, redis=redis)
    token = rt.install()
    yield rt
    token.var.reset(token)
    rt.store.engine.dispose()


def lifecycle(order: str) -> list[Event]:
    return [event(s, order=order) for s in ("AWAITING_PAYMENT", "PAYMENT_COMPLETED", "SUCCESS")]


def applied_rows(rt: Services) -> int:
    with rt.store.sessions() as s:
        return s.scalar(
            select(func.count()).select_from(EventRecord).where(EventRecord.decision == "applied")
        )


def event_rows(rt: Services) -> int:
    with rt.store.sessions() as s:
        return s.scalar(select(func.count()).select_from(EventRecord))


def test_a_batch_is_applied_in_one_pass_and_trimmed(runtime: Services, redis: Redis) -> None:
    events = [e for i in range(20) for e in lifecycle(f"b-{i}")]
    runtime.stream.append_many(events)
    assert redis.xlen(STREAM) == 60
    drainer = Drainer(runtime, "c1")
    assert drainer.drain_once(block_ms=None) == 50  # one batch: RAMPWATCH_STREAM_BATCH
    assert drainer.drain_once(block_ms=None) == 10
    assert drainer.drain_once(block_ms=None) is None
    assert applied_rows(runtime) == 60
    assert runtime.store.order_view("alixpay", "b-7").status == "SUCCESS"
    # Acknowledged entries are deleted: nothing waits, nothing is pending.
    assert redis.xlen(STREAM) == 0
    assert runtime.stream.depths() == {"callbacks": 0, "callbacks_pending": 0, "callbacks_dead": 0}


def _batches(rt: Services) -> list[int]:
    """The sizes of the batches the store commits from now on."""
    sizes: list[int] = []
    rt.store.observers["batch sizes"] = lambda outcomes: sizes.append(len(outcomes))
    return sizes


def _lingering(rt: Services, seconds: float) -> Drainer:
    rt.settings = dataclasses.replace(rt.settings, stream_linger=seconds)
    return Drainer(rt, "lingerer")


def test_a_consumer_finding_a_few_entries_waits_the_linger_and_applies_what_came_with_them(
    runtime: Services,
) -> None:
    drainer = _lingering(runtime, 0.5)
    sizes = _batches(runtime)
    runtime.stream.append_many(lifecycle("linger-1"))  # 3 waiting: fewer than half a batch (50)
    later = threading.Timer(0.1, runtime.stream.append_many, [lifecycle("linger-2") + lifecycle("linger-3")])
    later.start()
    try:
        assert drainer.drain_once(block_ms=1000) == 9
    finally:
        later.cancel()
    assert sizes == [9]  # one transaction, not 3 then 6
    assert applied_rows(runtime) == 9


def test_the_linger_grows_with_the_consumers_sharing_the_stream(runtime: Services) -> None:
    """n consumers each see 1/n of what arrives: each waits n lingers, so that its batch
    is the one a lone consumer would read. Here 0.4 s a consumer; three more arrive 1 s
    after the first: alone, a consumer applies without them; beside three others it
    waits 1.6 s and applies them with the first."""

    def first_batch(name: str, order: str) -> list[int]:
        drainer = _lingering(runtime, 0.4)
        drainer.consumer = name
        sizes = _batches(runtime)
        runtime.stream.append_many(lifecycle(f"{order}-1"))
        later = threading.Timer(1.0, runtime.stream.append_many, [lifecycle(f"{order}-2")])
        later.start()
        try:
            drainer.drain_once(block_ms=1000)
        finally:
            later.join()
        return sizes

    assert first_batch("alone", "grow-a") == [3]  # the late three were not waited for
    Drainer(runtime, "alone").drain()  # they are applied by the next pass
    assert runtime.stream.live_consumers(3000) == 1
    # Two other consumers are given entries: with "alone" and the next, four share the stream.
    runtime.stream.append_many([event("AWAITING_PAYMENT", order=f"grow-o{n}") for n in range(2)])
    for name in ("other-1", "other-2"):
        assert len(runtime.stream.read(name, 1, None)) == 1
    assert runtime.stream.live_consumers(3000) == 3
    assert first_batch("beside-three", "grow-b") == [6]
    assert runtime.stream.live_consumers(3000) == 4
    time.sleep(0.3)
    assert runtime.stream.live_consumers(200) == 1  # none given entries lately: at least the caller


def test_the_linger_stops_growing_at_five_consumers(runtime: Services) -> None:
    runtime.stream.append_many([event("AWAITING_PAYMENT", order=f"many-{n}") for n in range(7)])
    for n in range(7):
        assert len(runtime.stream.read(f"many-{n}", 1, None)) == 1
    drainer = _lingering(runtime, 0.1)
    assert runtime.stream.live_consumers(3000) == 7
    assert drainer._lingering() == pytest.approx(0.5)


def test_a_lone_callback_on_a_quiet_stream_is_applied_without_the_linger(runtime: Services) -> None:
    drainer = _lingering(runtime, 1.0)
    sizes = _batches(runtime)
    appended: list[float] = []

    def append() -> None:
        runtime.stream.append_many([event("AWAITING_PAYMENT", order="quiet-1")])
        appended.append(time.monotonic())

    later = threading.Timer(0.2, append)
    later.start()
    assert drainer.drain_once(block_ms=3000) == 1  # the read waited for it
    applied_after = time.monotonic() - appended[0]
    assert sizes == [1] and applied_after < 0.5, applied_after


def test_neither_a_burst_drain_nor_a_stopping_consumer_lingers(runtime: Services) -> None:
    drainer = _lingering(runtime, 1.0)
    runtime.stream.append_many(lifecycle("burst-1"))
    began = time.monotonic()
    assert drainer.drain() == 3  # burst workers and tests: what is there, at once
    assert time.monotonic() - began < 0.5
    runtime.stream.append_many(lifecycle("burst-2"))
    threading.Timer(0.1, drainer.stop).start()
    began = time.monotonic()
    assert drainer.drain_once(block_ms=1000) == 3  # the linger ends with the stop
    assert time.monotonic() - began < 0.6
    assert applied_rows(runtime) == 6


def test_an_entry_read_by_a_consumer_that_died_is_taken_over_and_applied_once(
    runtime: Services, redis: Redis
) -> None:
    runtime.stream.append_many(lifecycle("crash-1"))
    # A consumer reads the batch and stalls (dies, as far as anyone can tell) before applying it.
    in_hand = runtime.stream.read("stalled", 10)
    assert len(in_hand) == 3 and runtime.stream.depths()["callbacks_pending"] == 3
    survivor = Drainer(runtime, "survivor")
    assert survivor.drain_once(block_ms=None) is None  # not idle long enough yet: not taken
    time.sleep(0.3)
    assert survivor.drain() == 3
    assert applied_rows(runtime) == 3
    # The stalled consumer wakes up and applies what it had in hand: the store's dedup
    # makes it a no-op (exactly once), and its late acknowledgement harms nothing.
    assert Drainer(runtime, "stalled").settle(in_hand) == 3
    assert applied_rows(runtime) == 3 and event_rows(runtime) == 3
    assert runtime.stream.read("stalled", 10) == []
    assert runtime.stream.depths() == {"callbacks": 0, "callbacks_pending": 0, "callbacks_dead": 0}


def test_re_delivery_of_an_applied_entry_changes_nothing(runtime: Services, redis: Redis) -> None:
    runtime.stream.append_many(lifecycle("twice"))
    entries = runtime.stream.read("a", 10)
    drainer = Drainer(runtime, "a")
    assert drainer.settle(entries) == 3
    first = runtime.store.order_view("alixpay", "twice").version
    # The same entries applied again (a consumer that was taken over mid-batch acks late).
    assert drainer.settle(entries) == 3
    order = runtime.store.order_view("alixpay", "twice")
    assert order.status == "SUCCESS" and order.version == first
    assert applied_rows(runtime) == 3
    assert sorted(e.decision for e in order.events) == ["applied", "applied", "applied"]


def test_a_poisoned_event_does_not_fail_its_neighbours_and_is_dead_lettered(
    runtime: Services, redis: Redis
) -> None:
    neighbours = [e for i in range(5) for e in lifecycle(f"n-{i}")]
    runtime.stream.append_many([*neighbours[:7], event("POISON", order="p-1"), *neighbours[7:]])
    drainer = Drainer(runtime, "c1")
    with poisoned(runtime.store.engine, '"POISON"'):  # the database refuses to record it
        assert drainer.drain_once(block_ms=None) == 15  # the batch failed; one by one, 15 of 16 applied
        assert applied_rows(runtime) == 15
        assert runtime.stream.depths()["callbacks_pending"] == 1
        # Retried after the claim's idle time until max_deliveries (3), then dead-lettered.
        deadline = time.monotonic() + 10
        while redis.xlen(DEAD) == 0 and time.monotonic() < deadline:
            drainer.drain_once(block_ms=100)
    assert redis.xlen(DEAD) == 1
    assert runtime.stream.depths() == {"callbacks": 0, "callbacks_pending": 0, "callbacks_dead": 1}
    (letter,) = DeadEvents(redis).list()
    assert letter.source == f"stream:{STREAM}"
    assert "provider_status=POISON" in letter.args and "p-1" in letter.args
    assert "raw_body" not in letter.args and "delivered 3 times" in letter.error
    assert any(s.name == letter.source for s in sources(redis))  # listed beside RQ's failed jobs
    # Fixed (the trigger is gone), then requeued by an operator: applied.
    assert DeadEvents(redis).requeue(letter.id)
    assert redis.xlen(DEAD) == 0
    drainer.drain()
    assert runtime.store.order_view("alixpay", "p-1") is not None
    assert runtime.stream.depths() == {"callbacks": 0, "callbacks_pending": 0, "callbacks_dead": 0}


def test_bad_data_is_dead_lettered_at_once(runtime: Services, redis: Redis) -> None:
    good = lifecycle("fine")
    redis.xadd(STREAM, {b"e": json.dumps({**event("SUCCESS").to_dict(), "v": 99}).encode()})
    redis.xadd(STREAM, {b"e": b"{not json"})
    runtime.stream.append_many(good)
    assert Drainer(runtime, "c1").drain() == 5
    assert applied_rows(runtime) == 3
    letters = DeadEvents(redis).list()
    assert len(letters) == 2
    assert any("unsupported event version" in letter.error for letter in letters)


def test_a_database_outage_counts_against_no_delivery(redis: Redis, keys: Keys, tmp_path: Path) -> None:
    """SQLite's write lock held outside makes every apply fail as an outage (PostgreSQL's
    outages: tests/faults)."""
    import sqlite3

    from orders.db import make_engine
    from orders.migrate import upgrade
    from orders.providers import STATUS_MAPS
    from orders.store import Store

    database_url = f"sqlite:///{tmp_path / 'outage.sqlite3'}"
    upgrade(database_url)
    settings = dataclasses.replace(
        make_settings(database_url, redis, keys), stream_claim_idle=0.2, stream_max_deliveries=3
    )
    store = Store(make_engine(database_url, wait=0.2), STATUS_MAPS, {})
    rt = build_services(settings, redis=redis, store=store)
    rt.stream.append_many(lifecycle("outage"))
    held = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=0)
    held.execute("BEGIN EXCLUSIVE")
    drainer = Drainer(rt, "c1")
    for _ in range(5):  # more deliveries than max_deliveries (3), all while the database is locked
        rt.database_watch._down.clear()  # as if it answered a ping, then failed the batch
        assert drainer.drain_once(block_ms=None) == 0
        assert rt.database_watch.is_down
    assert redis.xlen(DEAD) == 0
    held.rollback()
    held.close()
    assert drainer.drain() == 3  # waits for the database, then takes the entries back at once
    assert applied_rows(rt) == 3
    assert rt.stream.depths() == {"callbacks": 0, "callbacks_pending": 0, "callbacks_dead": 0}
    store.engine.dispose()


def test_overlapping_batches_of_two_consumers_neither_deadlock_nor_double_apply(
    runtime: Services, redis: Redis
) -> None:
    """Two consumers apply batches naming the same orders at the same time: rows are
    locked in key order, so neither deadlocks, and each event is recorded once."""
    import random

    events = [e for i in range(40) for e in lifecycle(f"x-{i}")]
    random.Random(7).shuffle(events)
    runtime.stream.append_many(events + events[::-1])  # every event twice, in two orders
    errors: list[BaseException] = []

    def consume(name: str) -> None:
        try:
            Drainer(runtime, name).drain()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(f"c{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    # Each distinct event recorded once (applied, or stale when it came after a later
    # state), its second delivery counted on the same record.
    assert event_rows(runtime) == 120
    assert runtime.stream.depths() == {"callbacks": 0, "callbacks_pending": 0, "callbacks_dead": 0}
    assert {runtime.store.order_view("alixpay", f"x-{i}").status for i in range(40)} == {"SUCCESS"}


def test_a_burst_worker_drains_the_stream_and_runs_the_jobs_it_queues(runtime: Services) -> None:
    runtime.stream.append_many(lifecycle("burst"))
    assert make_worker(runtime).work(burst=True)
    assert runtime.store.order_view("alixpay", "burst").status == "SUCCESS"


def test_requeued_rq_apply_jobs_from_before_the_stream_are_still_applied(runtime: Services) -> None:
    runtime.queues.enqueue_event(event("SUCCESS", order="legacy"))
    make_worker(runtime).work(burst=True)
    assert runtime.store.order_view("alixpay", "legacy").status == "SUCCESS"


def worker_env(database_url: str, redis: Redis, keys: Keys) -> dict[str, str]:
    port = redis.connection_pool.connection_kwargs["port"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAMPWATCH_", "ALIXPAY_", "DATABASE_"))}
    env.update(alix_env(keys, "http://127.0.0.1:9"))
    env.update(
        DATABASE_URL=database_url, REDIS_URL=f"redis://127.0.0.1:{port}/0", RAMPWATCH_STREAM_BATCH="20"
    )
    return env


def test_sigterm_finishes_and_acknowledges_the_batch_in_hand(
    runtime: Services, redis: Redis, keys: Keys, database_url: str
) -> None:
    """A real worker process with a backlog is told to stop mid-drain: it exits, and what it
    had read is applied and acknowledged (nothing left pending for a takeover)."""
    runtime.stream.append_many([e for i in range(300) for e in lifecycle(f"t-{i}")])
    rampwatch = Path(sys.executable).with_name("rampwatch")
    proc = subprocess.Popen(
        [str(rampwatch), "worker"],
        env=worker_env(database_url, redis, keys),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while applied_rows(runtime) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()[-2000:]
    depths = runtime.stream.depths()
    assert depths["callbacks_pending"] == 0, depths  # the batch in hand was acknowledged
    applied = applied_rows(runtime)
    assert 60 <= applied < 900 and applied + depths["callbacks"] == 900


def test_the_cli_lists_and_requeues_dead_callbacks_beside_failed_jobs(
    runtime: Services, redis: Redis, database_url: str, tmp_path: Path
) -> None:
    from cli_support import base_env, run

    runtime.stream.append(event("SUCCESS", order="dead-1"))
    entry = runtime.stream.read("c1", 1)[0]
    runtime.stream.dead_letter(entry, "BadEventPayload: refused")
    env = base_env(database_url, redis)
    (letter,) = json.loads(run(["dlq", "list", "--json"], env, tmp_path).stdout)["dead_letters"]
    assert letter["source"] == f"stream:{STREAM}" and letter["error"] == "BadEventPayload: refused"
    assert "external_order_id=dead-1" in letter["args"] and "raw_body" not in letter["args"]
    done = run(["dlq", "requeue", letter["id"]], env, tmp_path)
    assert done.stdout.strip() == f"requeued stream:{STREAM} {letter['id']}"
    assert redis.xlen(DEAD) == 0 and redis.xlen(STREAM) == 1
    Drainer(runtime, "c1").drain()
    assert runtime.store.order_view("alixpay", "dead-1").status == "SUCCESS"


def test_consumers_of_stopped_workers_are_forgotten_but_never_with_entries_in_hand(
    runtime: Services, redis: Redis
) -> None:
    runtime.stream.append_many(lifecycle("gc"))
    done = runtime.stream.read("stopped-clean", 2)
    runtime.stream.ack([e.id for e in done])
    assert len(runtime.stream.read("stopped-mid-batch", 10)) == 1  # holds one, unacknowledged
    names = {c["name"].decode() for c in redis.xinfo_consumers(STREAM, "appliers")}
    assert {"stopped-clean", "stopped-mid-batch"} <= names
    assert runtime.stream.forget_idle_consumers(3_600_000, keep="alive") == 0  # none idle an hour
    assert runtime.stream.forget_idle_consumers(0, keep="stopped-clean") == 0  # kept by name
    assert runtime.stream.forget_idle_consumers(0, keep="alive") == 1
    names = {c["name"].decode() for c in redis.xinfo_consumers(STREAM, "appliers")}
    assert "stopped-clean" not in names and "stopped-mid-batch" in names  # its entry stays claimable
    time.sleep(0.3)
    assert Drainer(runtime, "alive").drain() == 1
    assert runtime.stream.depths() == {"callbacks": 0, "callbacks_pending": 0, "callbacks_dead": 0}


def test_each_receiver_thread_appends_on_a_connection_of_its_own_and_survives_its_loss(
    redis: Redis,
) -> None:
    """The receiver's threads keep one connection each for ``append`` (no pool checkout per
    callback); a connection Redis dropped is made again, at once with our client's
    retries, else at the next callback."""
    url = "redis://127.0.0.1:{port}/0".format(**redis.connection_pool.connection_kwargs)
    stream = EventStream(connect(url))
    appended, done = threading.Barrier(4), threading.Event()

    def receiver_thread(order: str) -> None:
        stream.append(event("AWAITING_PAYMENT", order=order))
        stream.append(event("SUCCESS", order=order))
        appended.wait(10)
        done.wait(10)  # alive, as gunicorn's threads are, holding its connection

    threads = [threading.Thread(target=receiver_thread, args=(f"t-{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    appended.wait(10)
    try:
        assert redis.xlen(STREAM) == 6
        held = [c for c in redis.client_list() if c["cmd"] == "xadd"]
        assert len(held) == 3, held  # one connection per thread, each used for both its appends
    finally:
        done.set()
        for t in threads:
            t.join()
    stream.append(event("PAYMENT_COMPLETED", order="t-0"))  # this thread's connection, then:
    redis.client_kill_filter(_type="normal", skipme=True)  # Redis drops every other client
    stream.append(event("PAYMENT_COMPLETED", order="t-1"))  # retried on a new connection
    assert redis.xlen(STREAM) == 8

    bare = EventStream(Redis.from_url(url))  # no retries
    bare.append(event("PAYMENT_COMPLETED", order="t-2"))
    redis.client_kill_filter(_type="normal", skipme=True)
    with pytest.raises(RedisConnectionError):
        bare.append(event("PAYMENT_COMPLETED", order="t-3"))  # a 503: the provider sends it again
    bare.append(event("PAYMENT_COMPLETED", order="t-3"))
    assert redis.xlen(STREAM) == 10


# ------------------------------------------------------------------ consumers side by side (PostgreSQL)


def provider_status_of(rt: Services, order: str) -> str | None:
    with rt.store.sessions() as s:
        return s.scalar(select(Order.provider_status).where(Order.external_order_id == order))


def hold_order(rt: Services, order: str):
    """Another transaction writing ``order``: its row locked until the returned one ends."""
    conn = rt.store.engine.connect()
    held = conn.begin()
    conn.execute(select(Order.id).where(Order.external_order_id == order).with_for_update())
    return conn, held


def test_a_batch_applies_the_free_orders_and_carries_those_another_transaction_writes(
    runtime: Services, redis: Redis
) -> None:
    """Before: a batch naming an order another consumer's transaction held waited for it
    whole (four workers applied 0.36x of what one did); now the free orders are applied at
    once and the held one in the next pass."""
    if not runtime.store.engine.dialect.name == "postgresql":
        pytest.skip("SQLite has one writer at a time: no other transaction holds a row")
    runtime.store.apply(
        [event("AWAITING_PAYMENT", order="held-1"), event("AWAITING_PAYMENT", order="free-1")]
    )
    conn, held = hold_order(runtime, "held-1")
    try:
        runtime.stream.append_many(
            [event("PAYMENT_COMPLETED", order="held-1"), event("PAYMENT_COMPLETED", order="free-1")]
        )
        drainer = Drainer(runtime, "side-by-side")
        started = time.monotonic()
        assert drainer.drain_once(block_ms=None) == 1
        assert time.monotonic() - started < 2.0  # not waited for
        assert provider_status_of(runtime, "free-1") == "PAYMENT_COMPLETED"
        assert provider_status_of(runtime, "held-1") == "AWAITING_PAYMENT"
        assert redis.xlen(STREAM) == 1  # the held order's entry: read, not acknowledged
    finally:
        held.rollback()
        conn.close()
    assert drainer.drain_once(block_ms=None) == 1
    assert provider_status_of(runtime, "held-1") == "PAYMENT_COMPLETED"
    assert redis.xlen(STREAM) == 0 and drainer.drain_once(block_ms=None) is None
    assert applied_rows(runtime) == 4


def test_a_pass_with_no_free_order_waits_for_the_locks_instead_of_spinning(
    runtime: Services, redis: Redis
) -> None:
    if not runtime.store.engine.dialect.name == "postgresql":
        pytest.skip("SQLite has one writer at a time: no other transaction holds a row")
    runtime.store.apply([event("AWAITING_PAYMENT", order="held-2")])
    conn, held = hold_order(runtime, "held-2")
    runtime.stream.append(event("SUCCESS", order="held-2"))
    release = threading.Timer(0.5, lambda: (held.rollback(), conn.close()))
    release.start()
    started = time.monotonic()
    try:
        assert Drainer(runtime, "waiter").drain_once(block_ms=None) == 1
    finally:
        release.join()
    assert time.monotonic() - started >= 0.4
    assert provider_status_of(runtime, "held-2") == "SUCCESS" and redis.xlen(STREAM) == 0


def test_a_new_order_another_consumer_is_adopting_is_carried_not_waited_for(
    runtime: Services, redis: Redis
) -> None:
    """Before: two consumers whose batches named the same new order each inserted its row,
    and the second waited on the first's uncommitted insert for the whole of the first's
    batch (21 of 48 samples of the scale benchmark's backends); now the second applies its
    free orders at once and the new order in a later pass, after the adopter commits."""
    if not runtime.store.engine.dialect.name == "postgresql":
        pytest.skip("SQLite has one writer at a time: no other transaction adopts an order")
    store = runtime.store
    adopter = store.sessions()
    adopter.begin()
    # Another consumer's transaction, in the middle of its batch: it has adopted new-1.
    store._lock_or_adopt(adopter, [("alixpay", "new-1")], store.clock(), wait=False)
    runtime.stream.append_many(
        [event("AWAITING_PAYMENT", order="new-1"), event("AWAITING_PAYMENT", order="new-2")]
    )
    drainer = Drainer(runtime, "second")
    answers: list[int | None] = []
    pass_ = threading.Thread(target=lambda: answers.append(drainer.drain_once(block_ms=None)), daemon=True)
    started = time.monotonic()
    pass_.start()
    pass_.join(5)
    waited = pass_.is_alive()
    adopter.rollback()  # the adopter's batch fails: the carried event adopts new-1 itself
    adopter.close()
    pass_.join(10)
    assert not waited, "the pass waited on the other consumer's uncommitted insert"
    assert answers == [1] and time.monotonic() - started < 2.0
    assert provider_status_of(runtime, "new-2") == "AWAITING_PAYMENT"
    assert provider_status_of(runtime, "new-1") is None and redis.xlen(STREAM) == 1
    assert drainer.drain_once(block_ms=None) == 1
    assert provider_status_of(runtime, "new-1") == "AWAITING_PAYMENT" and redis.xlen(STREAM) == 0
    assert applied_rows(runtime) == 2


def test_an_order_another_transaction_has_updated_is_carried_without_an_insert_that_waits(
    runtime: Services, redis: Redis
) -> None:
    """Before: an order row skipped as locked was counted as missing and inserted again
    (``ON CONFLICT DO NOTHING``); when the holder had updated the row, as every writer
    does, the insert waited for the holder's whole transaction. Now rows that exist are
    carried without an insert."""
    if not runtime.store.engine.dialect.name == "postgresql":
        pytest.skip("SQLite has one writer at a time: no other transaction holds a row")
    runtime.store.apply([event("AWAITING_PAYMENT", order="busy-1")])
    conn, held = hold_order(runtime, "busy-1")
    conn.execute(update(Order).where(Order.external_order_id == "busy-1").values(version=Order.version))
    runtime.stream.append_many(
        [event("PAYMENT_COMPLETED", order="busy-1"), event("AWAITING_PAYMENT", order="calm-1")]
    )
    drainer = Drainer(runtime, "beside")
    answers: list[int | None] = []
    pass_ = threading.Thread(target=lambda: answers.append(drainer.drain_once(block_ms=None)), daemon=True)
    pass_.start()
    pass_.join(5)
    waited = pass_.is_alive()
    held.rollback()
    conn.close()
    pass_.join(10)
    assert not waited, "the pass waited on the other transaction's update"
    assert answers == [1] and provider_status_of(runtime, "calm-1") == "AWAITING_PAYMENT"
    assert provider_status_of(runtime, "busy-1") == "AWAITING_PAYMENT" and redis.xlen(STREAM) == 1
    assert drainer.drain_once(block_ms=None) == 1
    assert provider_status_of(runtime, "busy-1") == "PAYMENT_COMPLETED" and redis.xlen(STREAM) == 0
