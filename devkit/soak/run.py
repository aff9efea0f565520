"""The soak run: the stack as a host runs it, traffic and faults for a while, then the check.

A private Redis with AOF (``appendfsync everysec``), SQLite under ``--var`` (or
``--database-url``), the three sandboxes (``devkit/<slug>/demo.py``), and the Procfile's
``release``, ``web``, two ``worker`` and one ``clock`` lines as real processes
(``devkit.fleet``) in an environment of their own (nothing of the caller's leaks in;
their working directory is ``--var``, so no ``.env`` is read). Then ``--seconds`` of
traffic (``traffic``) while ``faults`` injects its schedule, then every callback fault is
switched off and the system gets ``--converge`` seconds to reach the sandboxes' truth by
itself and to record every callback it accepted (an accepted callback not recorded by
then is counted lost). It prints one table (``measure.Report``) and exits 0 only if every order
converged, no accepted callback was lost and no process exited on its own.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import requests
from sqlalchemy import create_engine

from devkit.alixpay import demo as alixpay_demo
from devkit.changelly import demo as changelly_demo
from devkit.fleet import Fleet
from devkit.fuspay import demo as fuspay_demo
from devkit.kit import SandboxKit
from devkit.localredis import PrivateRedis, free_port
from devkit.processes import read_procfile
from devkit.soak.faults import Injector, run_schedule
from devkit.soak.measure import Lag, Report, applied_events, lost_callbacks
from devkit.soak.traffic import Traffic
from devkit.stack import say

CHECKOUT = Path(__file__).resolve().parents[2]
STARTERS = {"alixpay": alixpay_demo.start, "changelly": changelly_demo.start, "fuspay": fuspay_demo.start}


def environment(var: Path, redis_url: str, database_url: str, port: int, token: str) -> dict[str, str]:
    """The processes' environment, built from nothing: the checkout's code, this stack's settings."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": str(CHECKOUT),
        "HOME": str(var),
        "LANG": "C.UTF-8",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RAMPWATCH_API_TOKEN": token,
        "RAMPWATCH_LOG_LEVEL": "INFO",
        "RAMPWATCH_SWEEP_INTERVAL": "1",
        "RAMPWATCH_POLL_LEASE": "10s",
        "ALIXPAY_POLL_BACKOFF": "2s,3s,5s",
        "FUSPAY_POLL_BACKOFF": "2s,3s,5s",
        "CHANGELLY_POLL_BACKOFF": "2s,3s,5s",
    }


def _wait_ready(url: str, fleet: Fleet, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fleet.exited():
            raise RuntimeError(f"exited before {url} was ready: {', '.join(fleet.exited())}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} was not ready within {timeout:g}s")


def soak(
    *, seconds: float, rate: float, var: Path, database_url: str | None, converge: float, workers: int = 2
) -> Report:
    shutil.rmtree(var, ignore_errors=True)
    (var / "dev").mkdir(parents=True)
    redis = PrivateRedis(appendonly=True).start()
    database_url = database_url or f"sqlite:///{(var / 'soak.sqlite3').as_posix()}"
    port, token = free_port(), secrets.token_urlsafe(24)
    base = f"http://127.0.0.1:{port}"
    env = environment(var, redis.url, database_url, port, token)
    sandboxes: dict[str, SandboxKit] = {}
    fleet = Fleet(env, var, var / "logs")
    stop, faults_done = threading.Event(), threading.Event()
    try:
        for provider, start in STARTERS.items():
            part = start(var / "dev", base, env, "soak")
            sandboxes[provider] = part.sandbox
            env.update(part.settings)
        env.update(ALIXPAY_TIMEOUT="3", FUSPAY_TIMEOUT="3", CHANGELLY_TIMEOUT="3")
        fleet.env = env
        procfile = read_procfile(CHECKOUT / "Procfile")
        release = subprocess.run(
            ["/bin/sh", "-c", f"exec {procfile['release']}"], env=env, cwd=var, capture_output=True, text=True
        )
        if release.returncode != 0:
            raise RuntimeError(f"release failed: {release.stdout[-2000:]}{release.stderr[-2000:]}")
        fleet.start("web", ["/bin/sh", "-c", f"exec {procfile['web']}"])
        engine = create_engine(
            database_url.replace("postgres://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
        )
        injector = Injector(fleet, procfile, redis, engine, sandboxes)
        for _ in range(workers):
            injector.start_worker()
        injector.start_clock()
        _wait_ready(f"{base}/readyz", fleet)
        say(
            f"soak: {seconds:g} s of traffic at {rate:g} orders/s with faults, on {database_url.split('@')[-1]}"
        )

        traffic = Traffic(base, token, sandboxes)
        traffic.start()
        lag = Lag(engine, traffic.truth)
        lag.start()
        started = time.monotonic()
        faulter = threading.Thread(
            target=run_schedule, args=(injector, started, seconds, stop, faults_done), daemon=True
        )
        faulter.start()
        while time.monotonic() - started < seconds:
            traffic.create_one()
            time.sleep(max(0.0, 1.0 / rate))
        faults_done.wait(120)
        traffic.settle(60)
        say(f"soak: traffic over ({len(traffic.orders)} orders); waiting up to {converge:g} s for the truth")
        # Converged: every order at its truth and every accepted callback recorded (the
        # last ones, flushed by settle(), may still be waiting in the queue).
        deadline = time.monotonic() + converge
        at_truth: dict[str, bool] = {}
        while time.monotonic() < deadline:
            at_truth = lag.sample()
            if at_truth and all(at_truth.values()) and not lost_callbacks(engine, sandboxes):
                break
            time.sleep(1.0)
        lag.stop()
        deliveries = [d for s in sandboxes.values() for d in s.deliveries]
        accepted = sum(1 for d in deliveries if d[2] == 200)
        behind = sorted(oid for oid, ok in at_truth.items() if not ok)
        if behind:
            truth = traffic.truth()
            say("soak: not at the truth: " + ", ".join(f"{oid} (want {truth[oid]})" for oid in behind[:20]))
        lost = lost_callbacks(engine, sandboxes)
        if lost:
            say("soak: lost: " + ", ".join(map(str, sorted(lost)[:20])))
        return Report(
            seconds=seconds,
            sent=len(deliveries),
            accepted=accepted,
            refused=len(deliveries) - accepted,
            dropped=sum(len(s.dropped) for s in sandboxes.values()),
            applied=applied_events(engine),
            faults=list(injector.done),
            converged=sum(1 for ok in at_truth.values() if ok),
            orders=len(traffic.orders),
            refused_creations=traffic.refused_creations,
            lost=len(lost),
            longest_behind=lag.longest,
            longest_order=lag.longest_order,
            exited=fleet.exited(),
        )
    finally:
        fleet.stop()
        stop.set()  # the fault thread ends only now: a Redis it restarted dies with it
        for sandbox in sandboxes.values():
            sandbox.stop()
        redis.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="traffic duration (default 150)")
    parser.add_argument("--rate", type=float, default=1.0, help="orders created per second (default 1)")
    parser.add_argument(
        "--converge", type=float, default=90.0, help="seconds allowed to reach the truth after"
    )
    parser.add_argument("--var", type=Path, default=CHECKOUT / "var" / "soak", help="its files (wiped first)")
    parser.add_argument("--database-url", help="default: SQLite under --var")
    args = parser.parse_args(argv)
    report = soak(
        seconds=args.seconds,
        rate=args.rate,
        var=args.var,
        database_url=args.database_url,
        converge=args.converge,
    )
    print(f"\nrampwatch soak: {report.seconds:g} s of traffic, then up to {args.converge:g} s to converge")
    print(report.table())
    print("\nfaults: " + "; ".join(report.faults))
    if report.exited:
        print("exited on their own: " + ", ".join(report.exited))
    print(f"process logs: {args.var / 'logs'}")
    return 0 if report.ok else 1
