"""Ingest: verified, durably queued callbacks per second and the ack latency (p50, p99), at
16 and 64 connections, through the Procfile's ``web`` line (gunicorn, ``receiver.gunicorn_conf``,
``$WEB_CONCURRENCY`` workers, else 2), against a hello-world Flask app (``_hello.py``)
served by the same gunicorn line, in the same run.

Each case is a pair, the bare server then rampwatch right after it, repeated
``BENCH_INGEST_REPEATS`` (3) times, the repetitions interleaved (16, 64, 16, 64, ...): on a
shared machine the ratio of one pair moves by about 0.05 from run to run, so the line gives
the median of the pairs' ratios (and of their p99 ratios), every pair's figures in ``runs``.

Load from ``wrk`` (2 threads, ``BENCH_INGEST_SECONDS`` per run, 5 by default), with a
Lua script cycling ``BENCH_INGEST_BODIES`` (4,000) AliX IPN bodies signed beforehand, one
per order. After each rampwatch run the server is stopped (its counts flushed), and the
callback stream must hold exactly the number of callbacks the receiver accepted (its own
``rampwatch_callbacks_total{outcome="accepted"}``), which is at least what wrk saw answered
200 and at most that plus one request per connection (cut off by wrk's end): verified, not
assumed, in every run. One JSON line per connection count: medians of req/s, p50, p99 of
both, the ratios, and the runs.

Needs ``wrk`` on PATH (``make bench`` installs it with apt-get when it can); without it
one JSON line says the benchmark was skipped. About 75 s."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from statistics import median

from _common import database, emit
from _stack import (
    AlixKeys,
    Proc,
    cleanup,
    drop_database,
    free_port,
    service_env,
    start_bare_web,
    start_web,
    wait_web,
    web_concurrency,
)
from redis import Redis

from config.metrics import key
from devkit.localredis import PrivateRedis
from workers.stream import STREAM

SECONDS = int(os.environ.get("BENCH_INGEST_SECONDS", "5"))
REPEATS = int(os.environ.get("BENCH_INGEST_REPEATS", "3"))
BODIES = int(os.environ.get("BENCH_INGEST_BODIES", "4000"))
CONNECTIONS = (16, 64)
THREADS = 2

LUA = r"""
-- Cycle the signed bodies of a file (one per line); each thread from its own offset.
local bodies, n, i = {}, 0, 0
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    bodies[n] = line
  end
  i = (id * 7919) % n
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  i = i % n + 1
  return wrk.format(nil, nil, nil, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0), latency.max))
end
"""


def wrk(url: str, connections: int, script: Path, bodies: Path) -> dict:
    """One wrk run; its figures (the script's ``done`` line). Raises when wrk fails or hangs."""
    args = [
        "wrk", f"-t{THREADS}", f"-c{connections}", f"-d{SECONDS}s", "--timeout", "10s",
        "-s", str(script), url, "--", str(bodies),
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=SECONDS + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr.strip()[:300]}")
    line = [s for s in done.stdout.splitlines() if s.startswith("{")][-1]
    raw = json.loads(line)
    seconds = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "requests": raw["requests"],
        "req_per_s": round(raw["requests"] / seconds, 1),
        "ok_per_s": round((raw["requests"] - raw["status"]) / seconds, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "non_2xx": raw["status"],
        "socket_errors": errors,
        "answered_2xx": raw["requests"] - raw["status"],
    }


def run_wrk(proc: Proc, port: int, connections: int, script: Path, bodies: Path) -> dict:
    if not proc.alive():
        raise RuntimeError(f"{proc.name} exited {proc.proc.returncode}:\n{proc.tail()}")
    return wrk(f"http://127.0.0.1:{port}/webhooks/alixpay", connections, script, bodies)


def pair(
    redis: Redis, bare: tuple[Proc, int], web: tuple[Proc, int], connections: int, script: Path, bodies: Path
) -> dict:
    """One bare run, then one rampwatch run right after it; the stream checked against the
    receiver's own count. Each run has a server of its own, started with the others before
    the first run (``start_servers``) and stopped after its run (each rampwatch gunicorn
    worker flushes its counts to Redis as it exits)."""
    try:
        base = run_wrk(*bare, connections, script, bodies)
    finally:
        bare[0].stop()
    redis.delete(STREAM, key("rampwatch_callbacks"))
    try:
        ours = run_wrk(*web, connections, script, bodies)
    finally:
        web[0].stop()
    queued = redis.xlen(STREAM)
    accepted = int(redis.hget(key("rampwatch_callbacks"), "alixpay|accepted") or 0)
    redis.delete(STREAM, key("rampwatch_callbacks"))
    answered = ours["answered_2xx"]
    # wrk's end cuts at most one request per connection after the server took it.
    stream_ok = queued == accepted and answered <= accepted <= answered + connections
    return {
        "callbacks_per_s": ours["ok_per_s"],
        "p50_ms": ours["p50_ms"],
        "p99_ms": ours["p99_ms"],
        "non_2xx": ours["non_2xx"],
        "socket_errors": ours["socket_errors"],
        "bare_req_per_s": base["ok_per_s"],
        "bare_p50_ms": base["p50_ms"],
        "bare_p99_ms": base["p99_ms"],
        "bare_non_2xx": base["non_2xx"],
        "ratio": round(ours["ok_per_s"] / base["ok_per_s"], 3) if base["ok_per_s"] else 0.0,
        "p99_ratio": round(ours["p99_ms"] / base["p99_ms"], 2) if base["p99_ms"] else 0.0,
        "answered_2xx": answered,
        "accepted_by_receiver": accepted,
        "stream_entries": queued,
        "stream_verified": stream_ok,
        "ok": stream_ok and ours["non_2xx"] == 0 and ours["socket_errors"] == 0,
    }


def start_servers(env: dict, folder: Path, workers: int) -> list[tuple[tuple[Proc, int], tuple[Proc, int]]]:
    """A bare and a rampwatch server for every pair, all started at once and waited for
    together: started one after another, each pair's two start-ups took a third of the
    benchmark's time. Each serves one run, fresh, as when it was started just before it;
    an idle server costs the runs before its own nothing measurable (its processes sleep)."""
    pairs = []
    for rep in range(REPEATS):
        for connections in CONNECTIONS:
            bare_port, web_port = free_port(), free_port()
            bare = start_bare_web(env, folder, bare_port, workers=workers, name=f"hello-{connections}-{rep}")
            web = start_web(env, folder, web_port, workers=workers, name=f"web-{connections}-{rep}")
            pairs.append(((bare, bare_port), (web, web_port)))
    for (bare, bare_port), (web, web_port) in pairs:
        wait_web(bare_port, bare, workers, timeout=120)
        wait_web(web_port, web, workers, timeout=120)
    return pairs


def main() -> None:
    if shutil.which("wrk") is None:
        emit(bench="ingest", ok=False, skipped="wrk is not installed (apt-get install wrk; make bench does)")
        return
    folder = Path(tempfile.mkdtemp(prefix="rampwatch-bench-ingest-"))
    keys = AlixKeys(folder)
    signed = keys.sign([(f"ingest-{i}", "AWAITING_PAYMENT", 100000 + i) for i in range(BODIES)])
    bodies = folder / "bodies.txt"
    bodies.write_bytes(b"\n".join(signed) + b"\n")
    script = folder / "cycle.lua"
    script.write_text(LUA)
    workers = web_concurrency()
    all_ok = True
    with PrivateRedis() as redis_server:
        redis = Redis.from_url(redis_server.url)
        url = database("sqlite")
        env = service_env(url, redis_server.url, keys)
        runs: dict[int, list[dict]] = {c: [] for c in CONNECTIONS}
        servers = start_servers(env, folder, workers)
        try:
            each = iter(servers)
            for _ in range(REPEATS):  # the repetitions interleaved, so a slow minute touches each case
                for connections in CONNECTIONS:
                    runs[connections].append(pair(redis, *next(each), connections, script, bodies))
        finally:
            for (bare, _), (web, _) in servers:
                bare.stop()
                web.stop()
        redis.close()
    for connections, pairs in runs.items():
        ratio = median(p["ratio"] for p in pairs)
        p99_ratio = median(p["p99_ratio"] for p in pairs)
        targets = {"ratio>=0.55": ratio >= 0.55}
        if connections == 16:
            targets["p99<=1.5x_bare"] = p99_ratio <= 1.5
        ok = all(p["ok"] for p in pairs)
        all_ok = all_ok and ok
        emit(
            bench="ingest",
            connections=connections,
            gunicorn_workers=workers,
            seconds=SECONDS,
            repeats=len(pairs),
            callbacks_per_s=median(p["callbacks_per_s"] for p in pairs),
            p50_ms=median(p["p50_ms"] for p in pairs),
            p99_ms=median(p["p99_ms"] for p in pairs),
            non_2xx=sum(p["non_2xx"] for p in pairs),
            socket_errors=sum(p["socket_errors"] for p in pairs),
            baseline="bare Flask, same gunicorn settings, run just before each",
            baseline_req_per_s=median(p["bare_req_per_s"] for p in pairs),
            baseline_p50_ms=median(p["bare_p50_ms"] for p in pairs),
            baseline_p99_ms=median(p["bare_p99_ms"] for p in pairs),
            baseline_non_2xx=sum(p["bare_non_2xx"] for p in pairs),
            ratio=ratio,
            p99_ratio=p99_ratio,
            stream_verified=all(p["stream_verified"] for p in pairs),
            targets=targets,
            ok=ok,
            runs=pairs,
        )
    drop_database(url)
    cleanup(folder, all_ok)


if __name__ == "__main__":
    main()
