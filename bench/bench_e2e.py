"""End to end: callback -> applied latency (p50, p99) at a steady ``BENCH_E2E_RATE``
(200) callbacks/s for ``BENCH_E2E_SECONDS`` (10), through the Procfile's ``web`` line
(gunicorn, ``$WEB_CONCURRENCY`` workers, else 2) and two ``rampwatch worker`` processes on
one private Redis, on SQLite (and PostgreSQL when RAMPWATCH_TEST_POSTGRES_URL is set).

Open loop (``_load.send``): each signed AliX callback (one order each) goes out on its
schedule over keep-alive connections, whatever the answers before it. A callback's
latency runs from its scheduled send time to its event's ``recorded_at`` in the store
(the writer's clock at apply; same machine, same clock). A case waits at most
``BENCH_E2E_DRAIN`` seconds (30) after the last send for the store to hold every
accepted callback; callbacks never applied are reported (and fail the case), not
dropped. One JSON line per database; about 16 s each."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from _common import database, databases, emit
from _load import send
from _stack import (
    AlixKeys,
    Deadline,
    cleanup,
    drop_database,
    free_port,
    percentile,
    service_env,
    start_web,
    start_worker,
    wait_until,
    wait_web,
    web_concurrency,
)
from redis import Redis
from sqlalchemy import func, select

from devkit.localredis import PrivateRedis
from orders.db import make_engine
from orders.models import EventRecord, Order
from workers.stream import EventStream

RATE = float(os.environ.get("BENCH_E2E_RATE", "200"))
SECONDS = float(os.environ.get("BENCH_E2E_SECONDS", "10"))
DRAIN = float(os.environ.get("BENCH_E2E_DRAIN", "30"))
WORKERS = 2


def applied_times(url: str, prefix: str) -> dict[str, float]:
    """Order id -> when its callback's event was recorded (epoch seconds)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Order.external_order_id, func.min(EventRecord.recorded_at))
                .join(EventRecord, EventRecord.order_id == Order.id)
                .where(Order.external_order_id.like(f"{prefix}-%"))
                .group_by(Order.external_order_id)
            ).all()
    finally:
        engine.dispose()
    return {order_id: recorded.timestamp() for order_id, recorded in rows}


def case(kind: str, folder: Path, keys: AlixKeys, bodies: list[bytes], prefix: str) -> bool:
    workers = web_concurrency()
    procs = []
    with PrivateRedis() as redis_server:
        redis = Redis.from_url(redis_server.url)
        stream = EventStream(redis)
        url = database(kind)
        env = service_env(url, redis_server.url, keys)
        port = free_port()
        try:
            procs.append(start_web(env, folder, port, workers=workers, name=f"e2e-web-{kind}"))
            procs += [start_worker(env, folder, f"e2e-{kind}-{n}") for n in range(WORKERS)]
            wait_web(port, procs[0], workers)
            # A first callback, applied, says the workers are up: then the clock starts.
            warm = send([port], "/webhooks/alixpay", bodies[:1], rate=None, threads=1)
            assert warm.accepted == 1, warm.status
            if not wait_until(lambda: len(applied_times(url, prefix)) == 1, Deadline(60)):
                raise RuntimeError("the workers applied no callback within 60 s")
            load = bodies[1:]
            sent = send([port], "/webhooks/alixpay", load, rate=RATE, threads=16, limit=SECONDS + 30)

            def settled() -> bool:
                depths = stream.depths()
                if depths["callbacks"] or depths["callbacks_pending"]:
                    return False
                return len(applied_times(url, prefix)) - 1 >= sent.accepted

            drained = wait_until(settled, Deadline(DRAIN), 0.25)
            applied = applied_times(url, prefix)
            alive = all(p.alive() for p in procs)
        finally:
            codes = [p.stop() for p in procs]
            redis.close()
            drop_database(url)
    latencies = sorted(
        applied[f"{prefix}-{i + 1}"] - sent.scheduled_wall[i]
        for i in range(len(load))
        if f"{prefix}-{i + 1}" in applied
    )
    acks = sorted(sent.ack_seconds[i] for i in range(len(load)) if sent.status[i])
    missing = sent.accepted - len(latencies)
    p99 = percentile(latencies, 0.99) * 1000
    ok = drained and alive and not sent.gave_up and missing == 0 and sent.non_2xx == 0
    emit(
        bench="e2e",
        db=kind,
        rate_per_s=RATE,
        seconds=SECONDS,
        web_workers=workers,
        workers=WORKERS,
        callbacks=len(load),
        accepted=sent.accepted,
        non_2xx=sent.non_2xx,
        applied=len(latencies),
        never_applied=missing,
        p50_ms=round(percentile(latencies, 0.5) * 1000, 1),
        p99_ms=round(p99, 1),
        max_ms=round((latencies[-1] if latencies else float("nan")) * 1000, 1),
        ack_p50_ms=round(percentile(acks, 0.5) * 1000, 1),
        ack_p99_ms=round(percentile(acks, 0.99) * 1000, 1),
        achieved_rate_per_s=round(len(load) / sent.seconds, 1) if sent.seconds else None,
        exit_codes=codes,
        targets={"p99<250ms": p99 < 250},
        ok=ok,
        **({} if drained else {"error": f"not every callback applied within {DRAIN:.0f}s of the last send"}),
    )
    return ok


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="rampwatch-bench-e2e-"))
    keys = AlixKeys(folder)
    count = int(RATE * SECONDS) + 1
    bodies = keys.sign([(f"e2e-{i}", "AWAITING_PAYMENT", 100000 + i) for i in range(count)])
    ok = True
    for kind in databases():  # each on a database of its own: the same callbacks
        ok = case(kind, folder, keys, bodies, "e2e") and ok
    cleanup(folder, ok)


if __name__ == "__main__":
    main()
