"""The sweep's queries in a store that has lived: 1,000,000 finished orders and 10,000 open
ones (issue 11's case; BENCH_TERMINAL and BENCH_OPEN change the sizes). Times, best and
worst of 5, on SQLite (and PostgreSQL when RAMPWATCH_TEST_POSTGRES_URL is set):

* ``sweep_due_query``: the sweep's due-order query alone (``orders.store.due_query``, 500 rows);
* ``sweep_claim``: one bounded claim of 500 due orders (``Store.claim_due``: the query under
  ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, and the lease written on the 500 rows);
* ``flag_stale``: the look for open orders past their provider's horizon, none due;
* ``flag_stuck``: the look for open orders past their state's expected time, none due.

Each prints one JSON line."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from _common import Timer, database, databases, emit
from sqlalchemy import insert, text

from config import PollPolicy
from orders.db import make_engine
from orders.models import Order
from orders.providers import STATUS_MAPS
from orders.store import Store, due_query

TERMINAL = int(os.environ.get("BENCH_TERMINAL", "1000000"))
OPEN = int(os.environ.get("BENCH_OPEN", "10000"))
CHUNK = 20_000


def rows(now: datetime, numbers: Iterable[int]) -> list[dict]:
    """Orders of a store that has lived: numbers below ``TERMINAL`` finished long ago,
    the others open."""
    out = []
    for i in numbers:
        open_ = i >= TERMINAL
        created = now - timedelta(days=30) + timedelta(seconds=i % 86_400)
        out.append(
            dict(
                provider="alixpay",
                external_order_id=f"s-{i}",
                status="AWAITING_PAYMENT" if open_ else "SUCCESS",
                rank=10 if open_ else 100,
                version=2,
                details={},
                poll_attempts=0,
                next_poll_at=now - timedelta(seconds=i % 600) if open_ else None,
                created_at=created if not open_ else now - timedelta(minutes=5),
                updated_at=created,
                status_at=created if not open_ else now - timedelta(minutes=5),
                terminal_at=None if open_ else created + timedelta(minutes=10),
                stale_flagged_at=None,
            )
        )
    return out


# Copies of the first ``:first`` finished orders, ``:copies`` of each, under new ids.
COPY = """
WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < :copies)
INSERT INTO orders (
    external_order_id, provider, status, rank, version, details, poll_attempts, next_poll_at,
    created_at, updated_at, status_at, terminal_at, stale_flagged_at
)
SELECT
    external_order_id || '-' || (k.n + :shift), provider, status, rank, version, details, poll_attempts,
    next_poll_at, created_at, updated_at, status_at, terminal_at, stale_flagged_at
FROM orders, k
WHERE orders.id IN (SELECT id FROM orders WHERE terminal_at IS NOT NULL ORDER BY id LIMIT :first)
"""


def fill(store: Store, now: datetime) -> None:
    """The open orders and ``CHUNK`` finished ones through SQLAlchemy, as ``rows`` makes
    them; then copies of those finished ones, under new ids, by the database itself
    until there are ``TERMINAL``: a million rows sent from Python took about three
    minutes of ``make bench`` on this 2-core VM, the copies take seconds."""
    first = min(CHUNK, TERMINAL)
    with store.sessions.begin() as s:
        s.execute(insert(Order), rows(now, range(first)))
        for start in range(TERMINAL, TERMINAL + OPEN, CHUNK):
            s.execute(insert(Order), rows(now, range(start, min(start + CHUNK, TERMINAL + OPEN))))
    copies = (TERMINAL - first) // first
    left = (TERMINAL - first) % first
    with store.engine.begin() as conn:
        if copies:
            conn.execute(text(COPY), {"copies": copies, "shift": 0, "first": first})
        if left:  # the rest: part of one more copy
            conn.execute(text(COPY), {"copies": 1, "shift": copies, "first": left})
        count = conn.scalar(text("SELECT count(*) FROM orders WHERE terminal_at IS NOT NULL"))
    assert count == TERMINAL, (count, TERMINAL)


def timed(call, times: int = 5) -> tuple[float, float]:
    timings = []
    for _ in range(times):
        with Timer() as t:
            call()
        timings.append(t.seconds)
    return round(min(timings) * 1000, 2), round(max(timings) * 1000, 2)


def measure(kind: str, now: datetime) -> None:
    policy = PollPolicy(horizon=72 * 3600)  # the open orders are 5 minutes old: none stale
    store = Store(make_engine(database(kind)), STATUS_MAPS, {"alixpay": policy}, clock=lambda: now)
    fill(store, now)
    if kind == "postgres":  # autovacuum keeps PostgreSQL's statistics; SQLite has none unless asked
        with store.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    sizes = {"db": kind, "finished_orders": TERMINAL, "open_orders": OPEN}

    def query() -> None:
        with store.engine.connect() as conn:
            assert len(conn.execute(due_query(now, ["alixpay"], 500)).all()) == 500

    def claim() -> None:
        assert len(store.claim_due(500, 120, ["alixpay"])) == 500

    best, worst = timed(query)  # before any claim: every open order is due
    emit(
        bench="sweep_due_query", batch=500, best_ms=best, worst_ms=worst, target_ms=20, met=best < 20, **sizes
    )
    best, worst = timed(claim)  # the query, locking, and the lease written on 500 rows
    emit(bench="sweep_claim", batch=500, best_ms=best, worst_ms=worst, **sizes)
    best, worst = timed(store.flag_stale)
    emit(bench="flag_stale", best_ms=best, worst_ms=worst, **sizes)
    best, worst = timed(store.flag_stuck)
    emit(bench="flag_stuck", best_ms=best, worst_ms=worst, **sizes)
    store.engine.dispose()


def main() -> None:
    now = datetime.now(UTC)
    for kind in databases():
        measure(kind, now)


if __name__ == "__main__":
    main()
