"""Notify: the partner told of every change, from a backlog of ``BENCH_NOTIFY_EVENTS``
(4,000) distinct AliX callbacks drained by two ``rampwatch worker`` processes with
``NOTIFY_URL`` set, on SQLite (and PostgreSQL when RAMPWATCH_TEST_POSTGRES_URL is set),
against the same partner endpoint taking as many notifications from a plain client in
the same run.

The partner is ``make run``'s (``devkit.partner.DemoPartner``: Werkzeug on 127.0.0.1, one
connection per request; it verifies every notification with the Standard Webhooks
library, takes a retry of one it has once, and checks that each order's versions arrive
in order), in this process. The backlog is put in the stream before the workers start, as
``bench_drain`` does. Timed from the workers' start: ``drained_after_s``, when the store
holds every event, and ``told_after_s``, when every notification the store wrote is
recorded delivered and the partner has each one, once. ``notifications_per_s`` is the
notifications over ``told_after_s``; the drain goes on meanwhile, so that figure is of
the whole path, from the stream to the partner.

The baseline, after the first case: a fresh partner of the same kind takes the same
number of notifications (the bodies the first case stored, each under a new message id,
signed as ``workers.notify`` signs) from a client process of its own, a
``requests.Session`` with ``NOTIFY_CONCURRENCY`` (8) threads: what this partner can take
on this machine from a sender that does nothing else. Each case gives up after
``BENCH_NOTIFY_TIMEOUT`` seconds (180)."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from _common import database, databases, emit
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
from devkit.partner import DemoPartner, new_secret
from orders.db import make_engine
from orders.events import utcnow
from orders.models import EventRecord, Notification
from workers.stream import EventStream

EVENTS = int(os.environ.get("BENCH_NOTIFY_EVENTS", "4000"))
TIMEOUT = float(os.environ.get("BENCH_NOTIFY_TIMEOUT", "180"))
WORKERS = 2
THREADS = 8  # NOTIFY_CONCURRENCY's default: the baseline client's threads
CHUNK = 5000


def case(kind: str, folder: Path, keys: AlixKeys) -> tuple[dict, list[str]]:
    """One database's run: its figures, and the bodies of the notifications it stored."""
    with (
        PrivateRedis() as redis_server,
        DemoPartner(new_secret(), folder / f"partner-{kind}.jsonl") as partner,
    ):
        redis = Redis.from_url(redis_server.url)
        url = database(kind)
        engine = make_engine(url)
        stream = EventStream(redis)
        events = callback_events(f"notify-{kind}", EVENTS)
        for start in range(0, len(events), CHUNK):
            stream.append_many(events[start : start + CHUNK])
        total = len(events)
        del events
        marks: dict[str, float] = {}

        def store_counts() -> tuple[int, int, int]:
            with engine.connect() as conn:
                recorded = conn.scalar(select(func.count()).select_from(EventRecord)) or 0
                written, delivered = conn.execute(
                    select(func.count(), func.count(Notification.delivered_at))
                ).one()
            return recorded, written, delivered

        def done() -> bool:
            if not all(p.alive() for p in procs):
                return True  # a dead worker: stop waiting
            recorded, written, delivered = store_counts()
            now = time.monotonic()
            if recorded >= total:
                marks.setdefault("drained", now)
                if delivered == written and partner.counts()[0] >= written:
                    marks["told"] = now
                    return True
            return False

        env = service_env(url, redis_server.url, keys, NOTIFY_URL=partner.url, NOTIFY_SECRET=partner.secret)
        started = time.monotonic()
        procs = [start_worker(env, folder, f"notify-{kind}-{n}") for n in range(WORKERS)]
        try:
            finished = wait_until(done, Deadline(TIMEOUT), 0.05)
            alive = all(p.alive() for p in procs)
        finally:
            for p in procs:
                p.terminate()
            codes = [p.stop() for p in procs]
        recorded, written, delivered = store_counts()
        with engine.connect() as conn:
            bodies = list(conn.scalars(select(Notification.body).order_by(Notification.id)))
            attempts = conn.scalar(select(func.sum(Notification.attempts))) or 0
        engine.dispose()
        redis.close()
        (taken, late), refused = partner.counts(), partner.refused
    drop_database(url)
    drained = marks.get("drained", started) - started
    told_after = marks["told"] - started if "told" in marks else None
    ok = finished and alive and "told" in marks and recorded == total and taken == written == delivered
    ok = ok and late == 0 and refused == 0
    figures = {
        "bench": "notify",
        "db": kind,
        "workers": WORKERS,
        "events": total,
        "events_recorded": recorded,
        "notifications": written,
        "delivered": delivered,
        "partner_took": taken,
        "attempts": attempts,
        "out_of_order": late,
        "refused": refused,
        "drained_after_s": round(drained, 2),
        "events_per_s": round(total / drained, 1) if drained else None,
        "told_after_s": round(told_after, 2) if told_after is not None else None,
        "notifications_per_s": round(written / told_after, 1) if told_after else None,
        "worker_exit_codes": codes,
        "ok": ok,
        **({} if finished else {"error": f"gave up after {TIMEOUT:.0f}s"}),
    }
    return figures, bodies


def send_all(url: str, secret: str, bodies: list[str], threads: int) -> float:
    """The baseline client (a process of its own): POST every body, signed, ``threads`` at
    once over one session; the seconds it took."""
    import requests

    from workers.notify import signature_headers

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=threads)
    session.mount("http://", adapter)
    failures = []

    def post(index: int) -> None:
        body = bodies[index]
        headers = {
            "Content-Type": "application/json",
            **signature_headers(f"msg_base_{index}", body, [secret], utcnow()),
        }
        answer = session.post(url, data=body.encode(), headers=headers, timeout=10)
        if answer.status_code != 200:
            failures.append(answer.status_code)

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, range(len(bodies))))
    seconds = time.monotonic() - started
    if failures:
        raise RuntimeError(f"{len(failures)} baseline notifications refused: {failures[:5]}")
    return seconds


def baseline(folder: Path, bodies: list[str]) -> dict:
    with DemoPartner(new_secret(), folder / "partner-baseline.jsonl") as partner:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            seconds = pool.submit(send_all, partner.url, partner.secret, bodies, THREADS).result(
                timeout=TIMEOUT
            )
        taken, _ = partner.counts()
    return {
        "baseline_notifications": len(bodies),
        "baseline_partner_took": taken,
        "baseline_seconds": round(seconds, 2),
        "baseline_notifications_per_s": round(len(bodies) / seconds, 1),
        "baseline_ok": taken == len(bodies),
    }


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="rampwatch-bench-notify-"))
    keys = AlixKeys(folder)
    lines = []
    base: dict | None = None
    for kind in databases():
        figures, bodies = case(kind, folder, keys)
        if base is None and bodies:
            base = baseline(folder, bodies)
        lines.append(figures)
    ok = True
    for figures in lines:
        rate = figures["notifications_per_s"]
        if base:
            figures.update(base)
            figures["ratio"] = round(rate / base["baseline_notifications_per_s"], 2) if rate else 0.0
        figures["ok"] = figures["ok"] and bool(base and base["baseline_ok"])
        ok = ok and figures["ok"]
        emit(**figures)
    cleanup(folder, ok)


if __name__ == "__main__":
    main()
