"""Worker memory: the peak RSS (``VmHWM`` of ``/proc/<pid>/status``) of one ``rampwatch
worker`` process after it applied ``BENCH_MEMORY_EVENTS`` callbacks from the
stream, on SQLite, against the same process's RSS once started and idle (its first
callback applied), in the same run; RSS is also sampled at each quarter of the events,
so a partial run still shows the trend.

The events (``_stack.callback_events``: a quarter of the count in orders, four statuses
each) are appended once the worker is idle. Gives up after ``BENCH_MEMORY_TIMEOUT``
seconds (150) with the figures at that point and how many events were applied.

Size: issue 11's target is after 100,000 events, the default (``BENCH_MEMORY_EVENTS``).
Since the writer inserts its rows without the ORM's unit of work, one worker applies them
in about 30 s on 2 cores (it took over 3 minutes at ~500 events/s before, when the default
was 50,000 to keep ``make bench`` within ten minutes). The quarter samples show whether
memory still grows by then."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from _common import database, emit
from _stack import (
    AlixKeys,
    Deadline,
    callback_events,
    cleanup,
    drop_database,
    service_env,
    start_worker,
    wait_until,
)
from redis import Redis
from sqlalchemy import func, select

from devkit.localredis import PrivateRedis
from orders.db import make_engine
from orders.models import EventRecord
from workers.stream import EventStream

EVENTS = int(os.environ.get("BENCH_MEMORY_EVENTS", "100000"))
TIMEOUT = float(os.environ.get("BENCH_MEMORY_TIMEOUT", "150"))
CHUNK = 5000


def mb(kb: int | None) -> float | None:
    return round(kb / 1024, 1) if kb is not None else None


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="rampwatch-bench-memory-"))
    keys = AlixKeys(folder)
    events = callback_events("mem", EVENTS)
    warm, events = events[:1], events[1:]
    with PrivateRedis() as redis_server:
        redis = Redis.from_url(redis_server.url)
        stream = EventStream(redis)
        url = database("sqlite")
        engine = make_engine(url)

        def recorded() -> int:
            with engine.connect() as conn:
                return conn.scalar(select(func.count()).select_from(EventRecord)) or 0

        worker = start_worker(service_env(url, redis_server.url, keys), folder, "memory")
        samples: dict[str, float | None] = {}
        applied = 0
        try:
            stream.append_many(warm)
            if (
                not wait_until(lambda: recorded() == 1 or not worker.alive(), Deadline(60))
                or not worker.alive()
            ):
                raise RuntimeError(f"the worker applied nothing within 60 s:\n{worker.tail()}")
            idle = worker.status("VmRSS")
            for start in range(0, len(events), CHUNK):
                stream.append_many(events[start : start + CHUNK])
            total = len(events) + 1
            deadline = Deadline(TIMEOUT)
            for quarter in (1, 2, 3, 4):

                def reached(quarter: int = quarter) -> bool:
                    nonlocal applied
                    applied = recorded()
                    return applied >= total * quarter // 4 or not worker.alive()

                if not wait_until(reached, deadline, 0.5) or not worker.alive():
                    break
                samples[f"rss_mb_at_{quarter * 25}pct"] = mb(worker.status("VmRSS"))
            # An entry is acknowledged right after its transaction commits: wait for that too.
            wait_until(lambda: sum(stream.depths().values()) == 0 or not worker.alive(), deadline, 0.1)
            peak = worker.status("VmHWM")
            rss = worker.status("VmRSS")
            alive = worker.alive()
            depths = stream.depths()
        finally:
            code = worker.stop()
            engine.dispose()
            redis.close()
            drop_database(url)
    done = applied >= total and depths["callbacks"] == 0 and depths["callbacks_pending"] == 0
    ok = done and alive and code == 0
    emit(
        bench="memory",
        db="sqlite",
        events=total,
        events_applied=applied,
        peak_rss_mb=mb(peak),
        rss_mb=mb(rss),
        baseline="the same worker, started and idle",
        baseline_rss_mb=mb(idle),
        ratio=round(peak / idle, 2) if peak and idle else None,
        **samples,
        exit_code=code,
        targets={"<200MB": peak is not None and peak < 200 * 1024},
        ok=ok,
        **({} if done else {"error": f"gave up after {TIMEOUT:.0f}s" if alive else "the worker died"}),
    )
    cleanup(folder, ok)


if __name__ == "__main__":
    main()
