"""Drain: events applied per second by two ``rampwatch worker`` processes from a backlog of
``BENCH_DRAIN_EVENTS`` distinct AliX callbacks, on SQLite (and PostgreSQL when
RAMPWATCH_TEST_POSTGRES_URL is set), against stock RQ in the same run: two
``rq worker --worker-class rq.worker.SimpleWorker --burst`` processes running
``BENCH_RQ_JOBS`` no-op jobs (``_noop.noop``, enqueued in pipelines).

The backlog is put in the stream (``EventStream.append_many``) before the workers start:
events as the receiver makes them (``_stack.callback_events``: a quarter of the count in
orders, each through four statuses). Timed from the workers' start until the stream's
depths are 0 (nothing unread, nothing pending) and the store holds every event; the RQ
baseline from its workers' start until both burst workers exited and RQ's finished
registry holds every job. Each case runs on a private Redis and gives up after
``BENCH_DRAIN_TIMEOUT`` seconds (180) with what it had done.

Prints the RQ baseline's line, then one line per database with events/s and the ratio.

Sizes: issue 11 asks for 50,000 of each. The events are 50,000 by default; the RQ jobs
10,000, so that ``make bench`` keeps within ten minutes on 2 cores: stock RQ runs 380-520
jobs/s with two processes there (50,000 would take 100-130 s more), and its rate is
steady after the first seconds (start-up is in the time; ``first_apply_after_s`` shows the
workers'); every JSON line gives the counts it ran. ``BENCH_RQ_JOBS=50000`` runs the
issue's size for the baseline too."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from _common import Timer, database, databases, emit
from _noop import noop
from _stack import (
    BENCH,
    BIN,
    AlixKeys,
    Deadline,
    Proc,
    callback_events,
    cleanup,
    drop_database,
    service_env,
    start_worker,
    wait_until,
)
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from sqlalchemy import func, select

from devkit.localredis import PrivateRedis
from orders.db import make_engine
from orders.models import EventRecord, Order
from orders.states import Status
from workers.stream import EventStream

EVENTS = int(os.environ.get("BENCH_DRAIN_EVENTS", "50000"))
RQ_JOBS = int(os.environ.get("BENCH_RQ_JOBS", "10000"))
# Each case gives up after this long; by default 120 s, or 1 s per 200 of its events or
# jobs where that is more (stock RQ runs about 400 jobs/s here: 50,000 take ~125 s).
TIMEOUT = float(os.environ.get("BENCH_DRAIN_TIMEOUT", str(max(120.0, max(EVENTS, RQ_JOBS) / 200))))
WORKERS = 2
CHUNK = 5000


def stop_all(procs: list[Proc]) -> list[int | None]:
    for proc in procs:
        proc.terminate()  # all at once; each waited for below
    return [proc.stop() for proc in procs]


def rq_baseline(folder: Path) -> tuple[float, bool]:
    """Stock RQ's jobs/s; emits its line."""
    with PrivateRedis() as redis_server:
        redis = Redis.from_url(redis_server.url)
        queue = Queue("bench", connection=redis)
        with Timer() as enqueue:
            for start in range(0, RQ_JOBS, CHUNK):
                with redis.pipeline() as pipe:
                    jobs = [Queue.prepare_data(noop) for _ in range(min(CHUNK, RQ_JOBS - start))]
                    queue.enqueue_many(jobs, pipeline=pipe)
                    pipe.execute()
        assert queue.count == RQ_JOBS, queue.count
        env = {**os.environ, "PYTHONPATH": str(BENCH), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        args = [str(BIN / "rq"), "worker", "--worker-class", "rq.worker.SimpleWorker", "--burst"]
        args += ["--url", redis_server.url, "bench"]
        started = time.monotonic()
        procs = [Proc(f"rq-{n}", args, env, folder) for n in range(WORKERS)]
        finished = FinishedJobRegistry(queue=queue)
        try:
            exited = wait_until(lambda: not any(p.alive() for p in procs), Deadline(TIMEOUT), 0.05)
            seconds = time.monotonic() - started
        finally:
            codes = stop_all(procs)
        done, failed = finished.count, FailedJobRegistry(queue=queue).count
        redis.close()
    rate = done / seconds
    ok = exited and done == RQ_JOBS and codes == [0] * WORKERS
    emit(
        bench="drain_rq_baseline",
        workers=WORKERS,
        worker="rq.worker.SimpleWorker --burst",
        jobs=RQ_JOBS,
        jobs_finished=done,
        jobs_failed=failed,
        enqueue_seconds=round(enqueue.seconds, 2),
        seconds=round(seconds, 2),
        jobs_per_s=round(rate, 1),
        exit_codes=codes,
        ok=ok,
        **({} if exited else {"error": f"gave up after {TIMEOUT:.0f}s"}),
    )
    return rate, ok


def drain(kind: str, folder: Path, keys: AlixKeys, baseline: float) -> bool:
    with PrivateRedis() as redis_server:
        redis = Redis.from_url(redis_server.url)
        url = database(kind)
        engine = make_engine(url)
        stream = EventStream(redis)
        events = callback_events(f"drain-{kind}", EVENTS)
        with Timer() as queued:
            for start in range(0, len(events), CHUNK):
                stream.append_many(events[start : start + CHUNK])
        total = len(events)
        assert redis.xlen(stream.stream) == total
        del events

        def recorded() -> int:
            with engine.connect() as conn:
                return conn.scalar(select(func.count()).select_from(EventRecord)) or 0

        progress: list[float] = []

        def drained() -> bool:
            depths = stream.depths()
            if not progress and depths["callbacks"] + depths["callbacks_pending"] < total:
                progress.append(time.monotonic())
            if depths["callbacks"] or depths["callbacks_pending"]:
                return not all(p.alive() for p in procs)  # a dead worker: stop waiting
            return recorded() >= total

        env = service_env(url, redis_server.url, keys)
        started = time.monotonic()
        procs = [start_worker(env, folder, f"drain-{kind}-{n}") for n in range(WORKERS)]
        try:
            finished = wait_until(drained, Deadline(TIMEOUT), 0.05)
            seconds = time.monotonic() - started
            alive = all(p.alive() for p in procs)
        finally:
            codes = stop_all(procs)
        depths = stream.depths()
        with engine.connect() as conn:
            events_recorded = conn.scalar(select(func.count()).select_from(EventRecord)) or 0
            decisions = dict(
                conn.execute(select(EventRecord.decision, func.count()).group_by(EventRecord.decision)).all()
            )
            orders = conn.scalar(select(func.count()).select_from(Order)) or 0
            success = (
                conn.scalar(
                    select(func.count()).select_from(Order).where(Order.status == Status.SUCCESS.value)
                )
                or 0
            )
        engine.dispose()
        redis.close()
    drop_database(url)
    rate = events_recorded / seconds
    first = progress[0] - started if progress else None
    ok = finished and alive and events_recorded == total and depths["callbacks_dead"] == 0
    ok = ok and success == orders == total // 4
    emit(
        bench="drain",
        db=kind,
        workers=WORKERS,
        events=total,
        events_recorded=events_recorded,
        decisions=decisions,
        orders_success=f"{success}/{orders}",
        append_seconds=round(queued.seconds, 2),
        seconds=round(seconds, 2),
        first_apply_after_s=round(first, 2) if first is not None else None,
        events_per_s=round(rate, 1),
        baseline="stock RQ SimpleWorker no-op jobs/s, 2 processes, same run",
        baseline_jobs_per_s=round(baseline, 1),
        ratio=round(rate / baseline, 2) if baseline else None,
        depths_after=depths,
        worker_exit_codes=codes,
        targets={">=1500/s": rate >= 1500, ">=2.5x_rq": bool(baseline) and rate >= 2.5 * baseline},
        ok=ok,
        **(
            {}
            if finished and alive
            else {"error": "a worker died" if finished else f"gave up after {TIMEOUT:.0f}s"}
        ),
    )
    return ok


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="rampwatch-bench-drain-"))
    keys = AlixKeys(folder)
    baseline, ok = rq_baseline(folder)
    for kind in databases():
        ok = drain(kind, folder, keys, baseline) and ok
    cleanup(folder, ok)


if __name__ == "__main__":
    main()
