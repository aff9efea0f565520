"""Ingest: verified, durably queued callbacks per second and the ack latency (p50, p99), at
16 and 64 connections, through the Procfile's ``web`` line (gunicorn, ``receiver.gunicorn_conf``,
``$WEB_CONCURRENCY`` workers, else 2), against a hello-world Flask app (``_hello.py``)
served by the same gunicorn line, in the same run, one case after the other
(bare 16, rampwatch 16, bare 64, rampwatch 64).

Load from ``wrk`` (2 threads, ``BENCH_INGEST_SECONDS`` per case, 10 by default), with a
Lua script cycling ``BENCH_INGEST_BODIES`` (4,000) AliX IPN bodies signed beforehand, one
per order. After each rampwatch case the server is stopped (its counts flushed), and the
callback stream must hold exactly the number of callbacks the receiver accepted (its own
``rampwatch_callbacks_total{outcome="accepted"}``), which is at least what wrk saw answered
200 and at most that plus one request per connection (cut off by wrk's end): verified, not
assumed. One JSON line per connection count: req/s, p50, p99 and non-2xx of both, ratios.

Needs ``wrk`` on PATH (``make bench`` installs it with apt-get when it can); without it
one JSON line says the benchmark was skipped. About 60 s."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

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

from config.metrics import FLUSH_INTERVAL, key
from devkit.localredis import PrivateRedis
from workers.stream import STREAM

SECONDS = int(os.environ.get("BENCH_INGEST_SECONDS", "10"))
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


def serve(
    proc: Proc, port: int, workers: int, connections: int, script: Path, bodies: Path, *, counts: bool
) -> dict:
    url = f"http://127.0.0.1:{port}"
    try:
        wait_web(port, proc, workers)
        return wrk(f"{url}/webhooks/alixpay", connections, script, bodies)
    finally:
        if counts and proc.alive():
            time.sleep(FLUSH_INTERVAL + 0.5)  # the receiver's counts reach Redis (and on exit)
        proc.stop()


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
        for connections in CONNECTIONS:
            port = free_port()
            bare_proc = start_bare_web(env, folder, port, workers=workers)
            bare = serve(bare_proc, port, workers, connections, script, bodies, counts=False)

            redis.delete(STREAM, key("rampwatch_callbacks"))
            port = free_port()
            web_proc = start_web(env, folder, port, workers=workers, name=f"web-{connections}")
            ours = serve(web_proc, port, workers, connections, script, bodies, counts=True)
            queued = redis.xlen(STREAM)
            accepted = int(redis.hget(key("rampwatch_callbacks"), "alixpay|accepted") or 0)
            answered = ours["answered_2xx"]
            # wrk's end cuts at most one request per connection after the server took it.
            stream_ok = queued == accepted and answered <= accepted <= answered + connections
            ratio = ours["ok_per_s"] / bare["ok_per_s"] if bare["ok_per_s"] else 0.0
            p99_ratio = ours["p99_ms"] / bare["p99_ms"] if bare["p99_ms"] else 0.0
            targets = {"ratio>=0.55": ratio >= 0.55}
            if connections == 16:
                targets["p99<=1.5x_bare"] = p99_ratio <= 1.5
            ok = stream_ok and ours["non_2xx"] == 0 and ours["socket_errors"] == 0
            all_ok = all_ok and ok
            emit(
                bench="ingest",
                connections=connections,
                gunicorn_workers=workers,
                seconds=SECONDS,
                callbacks_per_s=ours["ok_per_s"],
                p50_ms=ours["p50_ms"],
                p99_ms=ours["p99_ms"],
                non_2xx=ours["non_2xx"],
                socket_errors=ours["socket_errors"],
                baseline="bare Flask, same gunicorn settings",
                baseline_req_per_s=bare["ok_per_s"],
                baseline_p50_ms=bare["p50_ms"],
                baseline_p99_ms=bare["p99_ms"],
                baseline_non_2xx=bare["non_2xx"],
                ratio=round(ratio, 3),
                p99_ratio=round(p99_ratio, 2),
                answered_2xx=answered,
                accepted_by_receiver=accepted,
                stream_entries=queued,
                stream_verified=stream_ok,
                targets=targets,
                ok=ok,
            )
            redis.delete(STREAM, key("rampwatch_callbacks"))
        redis.close()
    drop_database(url)
    cleanup(folder, all_ok)


if __name__ == "__main__":
    main()
