"""Scale: callbacks through web and worker processes against one private Redis and one
PostgreSQL (RAMPWATCH_TEST_POSTGRES_URL; without it, one JSON line says it was skipped),
first with 1 web + 1 worker, then 2 web + 4 workers, in the same run: the throughput must
grow, and exactly-once and per-order serialization must hold, checked in the store.

Each ``web`` is the Procfile's line with ``WEB_CONCURRENCY=1`` (one gunicorn worker per web
process, as a one-process dyno), each worker ``rampwatch worker``. The load is
``BENCH_SCALE_ORDERS`` (600) orders, each with its four AliX statuses plus two
re-deliveries (one byte for byte, one with an unsigned field added), all shuffled, sent
as fast as 32 keep-alive client threads go, spread over the web processes. Throughput is
callbacks per second from the first send until the store holds every delivery.

Checked for every order (each violation counted, with examples, and failing the case):
its final status is SUCCESS; exactly one event record per distinct dedup key, and no
other; the records' ``seen_count`` adds up to the deliveries sent (every delivery counted
once); ``version`` equals the number of applied events, whose ``version_after`` are
exactly 1..version (no two writers applied to one order at once). Each phase gives up
after ``BENCH_SCALE_TIMEOUT`` seconds (150). About 60 s in all."""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from _common import database, emit
from _load import send
from _stack import (
    LIFECYCLE,
    AlixKeys,
    Deadline,
    Proc,
    cleanup,
    free_port,
    service_env,
    start_web,
    start_worker,
    wait_until,
    wait_web,
    wait_workers,
)
from redis import Redis
from sqlalchemy import func, select

from devkit.localredis import PrivateRedis
from orders.db import make_engine
from orders.models import EventRecord, Order
from orders.states import Decision, Status
from workers.stream import EventStream

ORDERS = int(os.environ.get("BENCH_SCALE_ORDERS", "600"))
TIMEOUT = float(os.environ.get("BENCH_SCALE_TIMEOUT", "150"))
PHASES = ((1, 1), (2, 4))  # (web processes, worker processes)
CLIENT_THREADS = 32


def workload(keys: AlixKeys) -> tuple[list[bytes], dict[str, int]]:
    """The shuffled deliveries, and how many each order gets."""
    rng = random.Random(11)
    signed = keys.sign([(f"scale-{i}", status, 100000 + i) for i in range(ORDERS) for status in LIFECYCLE])
    deliveries: list[bytes] = []
    per_order: dict[str, int] = {}
    for i in range(ORDERS):
        bodies = signed[i * len(LIFECYCLE) : (i + 1) * len(LIFECYCLE)]
        again = rng.choice(bodies)
        reworded = json.loads(rng.choice(bodies))
        reworded["attempt"] = 2  # not signed: the same delivery
        deliveries += [*bodies, again, json.dumps(reworded).encode()]
        per_order[f"scale-{i}"] = len(bodies) + 2
    rng.shuffle(deliveries)
    return deliveries, per_order


def check(url: str, per_order: dict[str, int]) -> tuple[Counter[str], list[str]]:
    """Every violation of exactly-once and per-order serialization, counted by kind."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            orders = {
                row.external_order_id: row
                for row in conn.execute(
                    select(
                        Order.id, Order.external_order_id, Order.status, Order.provider_status, Order.version
                    )
                )
            }
            records = conn.execute(
                select(
                    EventRecord.order_id,
                    EventRecord.dedup_key,
                    EventRecord.decision,
                    EventRecord.version_after,
                    EventRecord.seen_count,
                )
            ).all()
    finally:
        engine.dispose()
    by_order = defaultdict(list)
    for record in records:
        by_order[record.order_id].append(record)
    expected_keys = Counter(f"status:{s}" for s in LIFECYCLE)
    violations: Counter[str] = Counter()
    examples: list[str] = []

    def violation(kind: str, order_id: str, detail: object) -> None:
        violations[kind] += 1
        if len(examples) < 10:
            examples.append(f"{order_id}: {kind}: {detail}")

    for order_id, deliveries in per_order.items():
        order = orders.get(order_id)
        if order is None:
            violation("order missing", order_id, "no row")
            continue
        rows = by_order.get(order.id, [])
        if order.status != Status.SUCCESS.value or order.provider_status != "SUCCESS":
            violation("final status", order_id, f"{order.status}/{order.provider_status}")
        keys = Counter(r.dedup_key for r in rows)
        if keys != expected_keys:
            violation("records per dedup key", order_id, dict(keys))
        seen = sum(r.seen_count for r in rows)
        if seen != deliveries:
            violation("deliveries counted", order_id, f"{seen} of {deliveries}")
        applied = sorted(r.version_after for r in rows if r.decision == Decision.APPLIED.value)
        if order.version != len(applied):
            violation("version vs applied events", order_id, f"v{order.version}, {len(applied)} applied")
        if applied != list(range(1, len(applied) + 1)):
            violation("applied versions not 1..n", order_id, applied)
    strays = set(orders) - set(per_order)
    if strays:
        violation("orders nobody sent", sorted(strays)[0], len(strays))
    return violations, examples


def phase(
    webs: int, workers: int, folder: Path, keys: AlixKeys, deliveries: list[bytes], per_order: dict
) -> dict:
    with PrivateRedis() as redis_server:
        redis = Redis.from_url(redis_server.url)
        stream = EventStream(redis)
        url = database("postgres")  # a schema made anew
        env = service_env(url, redis_server.url, keys)
        ports = [free_port() for _ in range(webs)]
        procs: list[Proc] = []
        engine = make_engine(url)
        try:
            procs += [
                start_web(env, folder, port, workers=1, name=f"scale-web{webs}x{workers}-{n}")
                for n, port in enumerate(ports)
            ]
            procs += [start_worker(env, folder, f"scale-{webs}x{workers}-{n}") for n in range(workers)]
            for port, proc in zip(ports, procs, strict=False):
                wait_web(port, proc, workers=1)
            wait_workers(redis, procs[webs:])  # their start (imports) is not the throughput's
            deadline = Deadline(TIMEOUT)
            started = time.monotonic()
            sent = send(
                ports, "/webhooks/alixpay", deliveries, rate=None, threads=CLIENT_THREADS, limit=TIMEOUT
            )

            def counted() -> int:
                with engine.connect() as conn:
                    return conn.scalar(select(func.sum(EventRecord.seen_count))) or 0

            def settled() -> bool:
                depths = stream.depths()
                return (
                    not depths["callbacks"] and not depths["callbacks_pending"] and counted() >= sent.accepted
                )

            drained = wait_until(settled, deadline, 0.1)
            seconds = time.monotonic() - started
            alive = all(p.alive() for p in procs)
            depths = stream.depths()
        finally:
            for p in procs:
                p.terminate()
            codes = [p.stop() for p in procs]
            engine.dispose()
            redis.close()
        violations, examples = check(url, per_order)
    return {
        "web_processes": webs,
        "gunicorn_workers_each": 1,
        "workers": workers,
        "orders": len(per_order),
        "callbacks": len(deliveries),
        "accepted": sent.accepted,
        "non_2xx": sent.non_2xx,
        "seconds": round(seconds, 2),
        "callbacks_per_s": round(sent.accepted / seconds, 1),
        "all_answered_after_s": round(sent.seconds, 2),  # the web side's share of the time
        "dead_letters": depths["callbacks_dead"],
        "violations": dict(violations),
        "violation_examples": examples,
        "exit_codes": codes,
        "exactly_once_and_ordering": not violations,
        "ok": drained and alive and not violations and sent.non_2xx == 0 and depths["callbacks_dead"] == 0,
        **({} if drained else {"error": f"not every delivery applied within {TIMEOUT:.0f}s"}),
    }


def main() -> None:
    if not os.environ.get("RAMPWATCH_TEST_POSTGRES_URL"):
        emit(bench="scale", skipped="RAMPWATCH_TEST_POSTGRES_URL is unset: scale runs on PostgreSQL only")
        return
    folder = Path(tempfile.mkdtemp(prefix="rampwatch-bench-scale-"))
    keys = AlixKeys(folder)
    deliveries, per_order = workload(keys)
    baseline = None
    ok = True
    for webs, workers in PHASES:
        figures = phase(webs, workers, folder, keys, deliveries, per_order)
        ok = ok and figures["ok"]
        if not figures["ok"]:
            figures["logs"] = str(folder)
        if baseline is None:
            baseline = figures["callbacks_per_s"]
            emit(bench="scale", db="postgres", **figures)
            continue
        ratio = figures["callbacks_per_s"] / baseline if baseline else 0.0
        emit(
            bench="scale",
            db="postgres",
            **figures,
            baseline="1 web + 1 worker, same run",
            baseline_callbacks_per_s=baseline,
            ratio=round(ratio, 2),
            targets={"grows": ratio > 1.0},
        )
    cleanup(folder, ok)


if __name__ == "__main__":
    main()
