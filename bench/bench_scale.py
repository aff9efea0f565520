"""Scale: callbacks through web and worker processes against one private Redis and one
PostgreSQL (RAMPWATCH_TEST_POSTGRES_URL; without it, one JSON line says it was skipped),
1 web + 1 worker, then 2 web + 4 workers, ``BENCH_SCALE_REPEATS`` (3) times interleaved:
the throughput must grow (the median of each 2 + 4 run's ratio to the 1 + 1 run just
before it), and exactly-once and per-order serialization must hold, checked in the store
after every run.

Each ``web`` is the Procfile's line with ``WEB_CONCURRENCY=1`` (one gunicorn worker per web
process, as a one-process dyno), each worker ``rampwatch worker``. The load is
``BENCH_SCALE_ORDERS`` (1,500) orders, each with its four AliX statuses plus two
re-deliveries (one byte for byte, one with an unsigned field added), all shuffled, each
delivery sent once, as fast as ``wrk`` goes on 32 keep-alive connections spread over the
web processes (``_load.blast``; a Python client took a large share of the two cores the
service is measured on). Throughput is callbacks per second from the first send until the
store holds every delivery.

Beside it, what bounds it: the share of CPU time the machine left idle during the run
(``cpu_idle_pct``: none left means the cores, not the design, are the limit; the 2 + 4
line's ``ratio_the_cpu_allows`` is the most it could reach at the baseline's cost per
callback once the baseline's idle share is used too), the CPU time of every process on the
machine per callback (``cpu_per_callback_ms``: what more processes cost), and how
often PostgreSQL's active backends were found waiting on a lock (``db_lock_wait_pct``, by
kind in ``db_lock_waits``): consumers serialised on each other's rows show here. Each run
also splits the CPU per callback by kind of process (``cpu_per_callback_ms_by_kind``: web,
worker, postgres, redis, other) and counts the transactions (``db_commits_per_callback``:
a consumer's batch is one) and Redis commands (``redis_calls_per_callback``) a callback
cost.

Checked for every order (each violation counted, with examples, and failing the case):
its final status is SUCCESS; exactly one event record per distinct dedup key, and no
other; the records' ``seen_count`` adds up to the deliveries sent (every delivery counted
once); ``version`` equals the number of applied events, whose ``version_after`` are
exactly 1..version (no two writers applied to one order at once). Each run gives up
after ``BENCH_SCALE_TIMEOUT`` seconds (150). About 60 s in all. Needs ``wrk``."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from statistics import median

from _common import database, emit
from _load import blast
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
from sqlalchemy import func, select, text

from devkit.localredis import PrivateRedis
from orders.db import make_engine
from orders.models import EventRecord, Order
from orders.states import Decision, Status
from workers.stream import EventStream

ORDERS = int(os.environ.get("BENCH_SCALE_ORDERS", "1500"))
TIMEOUT = float(os.environ.get("BENCH_SCALE_TIMEOUT", "150"))
REPEATS = int(os.environ.get("BENCH_SCALE_REPEATS", "3"))
PHASES = ((1, 1), (2, 4))  # (web processes, worker processes)
CONNECTIONS = 32


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


def cpu_times() -> tuple[int, int]:
    """The machine's (idle, total) CPU time so far, in ticks, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait


def process_kind(pid: str) -> str | None:
    """What a process is, for the CPU split: ``web`` (gunicorn), ``worker`` (rampwatch
    worker), ``redis``, ``postgres``, else None."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    line = b" ".join(args)
    name = args[0].rsplit(b"/", 1)[-1]
    if b"gunicorn" in line:
        return "web"
    if b"rampwatch" in line and b"worker" in args:
        return "worker"
    if name.startswith(b"redis-server"):
        return "redis"
    if name.startswith(b"postgres") or args[0].startswith(b"postgres"):  # backends: "postgres: ..."
        return "postgres"
    return None


def cpu_by_process() -> dict[str, tuple[str, int]]:
    """The (kind, user + system CPU ticks so far) of every process of the kinds above, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or (kind := process_kind(entry.name)) is None:
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[entry.name] = (kind, int(fields[11]) + int(fields[12]))  # utime, stime
    return found


class Watch:
    """During a phase: the share of CPU time the machine left idle (/proc/stat), and what
    PostgreSQL's active client backends were doing, sampled every 50 ms
    (``pg_stat_activity``): how many samples found one waiting on a lock, and on which."""

    QUERY = text(
        "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE state = 'active'"
        " AND backend_type = 'client backend' AND datname = current_database()"
        " AND pid <> pg_backend_pid()"
    )

    COMMITS = text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")

    def __init__(self, url: str, redis: Redis):
        self.engine = make_engine(url)
        self.redis = redis
        self.stop = threading.Event()
        self.active = 0
        self.waits: Counter[str] = Counter()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> Watch:
        self.cpu = cpu_times()
        self.processes = cpu_by_process()
        self.commits = self._commits()
        self.redis.config_resetstat()
        self.thread.start()
        return self

    def _commits(self) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(self.COMMITS)

    def _sample(self) -> None:
        with self.engine.connect() as conn:
            while not self.stop.wait(0.05):
                for row in conn.execute(self.QUERY):
                    self.active += 1
                    if row.wait_event_type == "Lock":
                        self.waits[row.wait_event] += 1
                conn.rollback()

    def finish(self) -> None:
        if self.stop.is_set():
            return
        self.stop.set()
        self.thread.join(5)
        idle, total = cpu_times()
        self.idle_share = (idle - self.cpu[0]) / max(1, total - self.cpu[1])
        tick = os.sysconf("SC_CLK_TCK")
        self.busy_seconds = ((total - self.cpu[1]) - (idle - self.cpu[0])) / tick
        spent: Counter[str] = Counter()  # of the processes still running (wrk is "other")
        for pid, (kind, ticks) in cpu_by_process().items():
            spent[kind] += ticks - self.processes.get(pid, (kind, 0))[1]
        self.by_kind = {kind: ticks / tick for kind, ticks in spent.items()}
        time.sleep(0.6)  # PostgreSQL's counts reach pg_stat_database within 0.5 s
        self.commits = self._commits() - self.commits
        self.redis_calls = {
            name.removeprefix("cmdstat_"): stats["calls"]
            for name, stats in self.redis.info("commandstats").items()
        }
        self.engine.dispose()

    def figures(self, callbacks: int) -> dict:
        return {
            "cpu_idle_pct": round(100 * self.idle_share, 1),
            # Every process's CPU time (ours, wrk, Redis, PostgreSQL) per callback.
            "cpu_per_callback_ms": round(1000 * self.busy_seconds / max(1, callbacks), 3),
            # The same by kind of process; "other" is wrk, this script and the rest.
            "cpu_per_callback_ms_by_kind": {
                kind: round(1000 * seconds / max(1, callbacks), 3)
                for kind, seconds in sorted(
                    {**self.by_kind, "other": self.busy_seconds - sum(self.by_kind.values())}.items()
                )
            },
            # How many transactions (of every process) and Redis commands a callback cost.
            "db_commits_per_callback": round(self.commits / max(1, callbacks), 3),
            "redis_calls_per_callback": {
                name: round(calls / max(1, callbacks), 3)
                for name, calls in sorted(self.redis_calls.items(), key=lambda kv: -kv[1])[:8]
            },
            "db_backend_samples": self.active,
            "db_lock_wait_pct": round(100 * sum(self.waits.values()) / max(1, self.active), 1),
            "db_lock_waits": dict(self.waits),
        }


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
        watch: Watch | None = None
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
            watch = Watch(url, redis).start()
            started = time.monotonic()
            sent = blast(
                ports, "/webhooks/alixpay", deliveries, folder, connections=CONNECTIONS, limit=TIMEOUT
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
            watch.finish()
            alive = all(p.alive() for p in procs)
            depths = stream.depths()
        finally:
            for p in procs:
                p.terminate()
            codes = [p.stop() for p in procs]
            if watch is not None:
                watch.finish()  # when the phase failed before its end
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
        "socket_errors": sent.socket_errors,
        "seconds": round(seconds, 2),
        "callbacks_per_s": round(sent.accepted / seconds, 1),
        "all_answered_after_s": round(sent.seconds, 2),  # the web side's share of the time
        "dead_letters": depths["callbacks_dead"],
        **watch.figures(sent.accepted),
        "violations": dict(violations),
        "violation_examples": examples,
        "exit_codes": codes,
        "exactly_once_and_ordering": not violations,
        "ok": drained
        and alive
        and not violations
        and not sent.gave_up
        and sent.non_2xx == sent.socket_errors == 0
        and depths["callbacks_dead"] == 0,
        **({} if drained else {"error": f"not every delivery applied within {TIMEOUT:.0f}s"}),
    }


RUN_FIGURES = (
    "callbacks_per_s",
    "seconds",
    "all_answered_after_s",
    "cpu_idle_pct",
    "cpu_per_callback_ms",
    "db_lock_wait_pct",
)


def summary(runs: list[dict]) -> dict:
    """One line for a configuration's runs: the medians of their figures, the sums of what
    went wrong, and each run's figures."""
    first = runs[0]
    violations: Counter[str] = Counter()
    for run in runs:
        violations.update(run["violations"])
    line = {k: first[k] for k in ("web_processes", "gunicorn_workers_each", "workers", "orders", "callbacks")}
    line.update({k: round(median(run[k] for run in runs), 2) for k in RUN_FIGURES})
    line.update({k: sum(run[k] for run in runs) for k in ("non_2xx", "socket_errors", "dead_letters")})
    line.update(
        repeats=len(runs),
        violations=dict(violations),
        violation_examples=[e for run in runs for e in run["violation_examples"]][:10],
        exactly_once_and_ordering=not violations,
        ok=all(run["ok"] for run in runs),
        runs=[
            {
                k: run[k]
                for k in (
                    *RUN_FIGURES,
                    "cpu_per_callback_ms_by_kind",
                    "db_commits_per_callback",
                    "redis_calls_per_callback",
                    "db_lock_waits",
                    "accepted",
                    "exit_codes",
                    "ok",
                )
            }
            for run in runs
        ],
    )
    errors = [run["error"] for run in runs if "error" in run]
    if errors:
        line["error"] = errors[0]
    return line


def main() -> None:
    if not os.environ.get("RAMPWATCH_TEST_POSTGRES_URL"):
        emit(bench="scale", skipped="RAMPWATCH_TEST_POSTGRES_URL is unset: scale runs on PostgreSQL only")
        return
    if shutil.which("wrk") is None:
        emit(bench="scale", ok=False, skipped="wrk is not installed (apt-get install wrk; make bench does)")
        return
    folder = Path(tempfile.mkdtemp(prefix="rampwatch-bench-scale-"))
    keys = AlixKeys(folder)
    deliveries, per_order = workload(keys)
    runs: dict[tuple[int, int], list[dict]] = {p: [] for p in PHASES}
    for _ in range(REPEATS):  # interleaved, so a slow minute of the VM touches both
        for webs, workers in PHASES:
            runs[(webs, workers)].append(phase(webs, workers, folder, keys, deliveries, per_order))
    ok = all(run["ok"] for done in runs.values() for run in done)
    baseline = runs[PHASES[0]]
    for config, done in runs.items():
        line = summary(done)
        if not line["ok"]:
            line["logs"] = str(folder)
        if config != PHASES[0]:
            # Each run against the baseline run just before it; the median of those ratios.
            ratio = median(
                run["callbacks_per_s"] / base["callbacks_per_s"] if base["callbacks_per_s"] else 0.0
                for run, base in zip(done, baseline, strict=True)
            )
            base = summary(baseline)
            line.update(
                baseline="1 web + 1 worker, run just before each",
                baseline_callbacks_per_s=base["callbacks_per_s"],
                baseline_cpu_idle_pct=base["cpu_idle_pct"],
                baseline_cpu_per_callback_ms=base["cpu_per_callback_ms"],
                # The most any configuration could reach on this machine at the baseline's
                # CPU cost per callback: what the baseline left idle, used too.
                ratio_the_cpu_allows=round(100 / max(1.0, 100 - base["cpu_idle_pct"]), 2),
                ratio=round(ratio, 2),
                targets={"grows": ratio > 1.0},
            )
        emit(bench="scale", db="postgres", **line)
    cleanup(folder, ok)


if __name__ == "__main__":
    main()
