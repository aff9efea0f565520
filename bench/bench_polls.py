"""Polls at provider latency: 10,000 open orders, all due, polled once by two real
``rampwatch worker`` processes fed by the ``rampwatch clock`` process (its sweep every
RAMPWATCH_SWEEP_INTERVAL, 5 s), against the AliX sandbox answering each order-detail read
50 ms late (issue 11's case; BENCH_POLL_ORDERS, BENCH_POLL_LATENCY and
RAMPWATCH_POLL_CONCURRENCY change it).

The sandbox's app is served with keep-alive (``_keepalive``: its own development server took
a new connection and a thread for every read, and most of a core). The orders are
bulk-inserted into a migrated SQLite store, due now; at the sandbox each one
has moved on (PAYMENT_COMPLETED), so every poll applies a change. The clock starts when the
clock process is started (the workers are registered by then) and stops when every order
has been polled once (``last_polled_at`` set, by an answer or a failure). The sandbox counts
the reads in flight; the most it saw is the fleet's concurrency (the setting is per worker
process). Everything is on 127.0.0.1; the run gives up after 180 s. Prints one JSON line.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import SECRET, WEBHOOK_SECRET, database, emit
from _keepalive import KeepAliveServer
from _stack import BIN, AlixKeys, Deadline, Proc, service_env, start_worker, wait_until
from redis import Redis
from sqlalchemy import func, insert, select

from devkit.alixpay.counting import CountingAlix
from devkit.kit.server import wsgi_app
from devkit.localredis import PrivateRedis
from orders.db import make_engine
from orders.models import Order

ORDERS = int(os.environ.get("BENCH_POLL_ORDERS", "10000"))
LATENCY = float(os.environ.get("BENCH_POLL_LATENCY", "0.05"))
CONCURRENCY = int(os.environ.get("RAMPWATCH_POLL_CONCURRENCY", "8"))
WORKERS = 2
GIVE_UP = 180.0
TARGET = 60.0
CHUNK = 5_000


def open_orders(now: datetime) -> list[dict[str, Any]]:
    return [
        dict(
            provider="alixpay",
            external_order_id=f"p-{i}",
            kind="sell",
            status="AWAITING_PAYMENT",
            provider_status="AWAITING_PAYMENT",
            rank=10,
            version=1,
            fiat_amount="1000",
            details={},
            poll_attempts=0,
            next_poll_at=now - timedelta(seconds=i % 600),
            created_at=now - timedelta(minutes=10),
            updated_at=now - timedelta(minutes=10),
            status_at=now - timedelta(minutes=10),
        )
        for i in range(ORDERS)
    ]


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="rampwatch-bench-polls-"))
    keys = AlixKeys(folder)
    url = database("sqlite")
    engine = make_engine(url)
    rows = open_orders(datetime.now(UTC))
    with engine.begin() as conn:
        for start in range(0, len(rows), CHUNK):
            conn.execute(insert(Order), rows[start : start + CHUNK])
    polled = select(func.count()).select_from(Order).where(Order.last_polled_at.is_not(None))
    moved = select(func.count()).select_from(Order).where(Order.status == "PROCESSING")

    procs: list[Proc] = []
    with (
        ExitStack() as stack,
        PrivateRedis() as redis,
        CountingAlix(
            partner_code="bench",
            secret_key=SECRET,
            webhook_secret_key=WEBHOOK_SECRET,
            partner_public_key=keys.partner.public_key(),
            alix_private_key=keys.alix,
        ) as sandbox,
    ):
        for i in range(ORDERS):
            sandbox.create_order(f"p-{i}", 1000)
            sandbox.advance(f"p-{i}", "PAYMENT_COMPLETED")
        sandbox.set_switches(detail_delay=LATENCY)
        # The sandbox's app behind a keep-alive server, as a provider's API is (``_keepalive``).
        api = stack.enter_context(KeepAliveServer(wsgi_app(sandbox._dispatch)))
        env = service_env(
            url,
            redis.url,
            keys,
            ALIXPAY_BASE_URL=api.url,
            RAMPWATCH_POLL_CONCURRENCY=str(CONCURRENCY),
        )
        try:
            names = [f"poller-{n}" for n in range(WORKERS)]
            procs += [start_worker(env, folder, name) for name in names]
            client = Redis.from_url(redis.url)
            if not wait_until(
                lambda: all(client.exists(f"rq:worker:{name}") for name in names), Deadline(60), 0.1
            ):
                raise RuntimeError("the workers did not register:\n" + "\n".join(p.tail() for p in procs))
            started = time.monotonic()
            procs.append(Proc("clock", [str(BIN / "rampwatch"), "clock"], env, folder))

            def done() -> bool:
                with engine.connect() as conn:
                    return conn.execute(polled).scalar_one() >= ORDERS

            finished = wait_until(done, Deadline(GIVE_UP), 0.25)
            seconds = time.monotonic() - started
            with engine.connect() as conn:
                count, changed = conn.execute(polled).scalar_one(), conn.execute(moved).scalar_one()
        finally:
            for proc in procs:
                proc.stop()
        emit(
            bench="polls",
            db="sqlite",
            orders=ORDERS,
            polled=count,
            moved=changed,
            finished=finished,
            seconds=round(seconds, 2),
            orders_per_s=round(count / seconds, 1),
            latency_ms=round(LATENCY * 1000),
            workers=WORKERS,
            concurrency_setting=CONCURRENCY,
            fleet_bound=CONCURRENCY * WORKERS,
            max_in_flight=sandbox.peak,
            sandbox_reads=sandbox.reads,
            target_s=TARGET,
            met=finished and seconds <= TARGET and sandbox.peak <= CONCURRENCY * WORKERS,
            targets={
                f"all_within_{TARGET:.0f}s": finished and seconds <= TARGET,
                "in_flight<=bound": sandbox.peak <= CONCURRENCY * WORKERS,
            },
            ok=finished and count == ORDERS,
        )
    engine.dispose()


if __name__ == "__main__":
    main()
