"""The sweep's queries read the partial indexes that hold open orders only, on SQLite and
PostgreSQL alike: the database's own plan for the statements the store sends is checked.
So does a batch's lock of its orders on a new store, before autovacuum's first ``ANALYZE``.

The store's statements are captured as it runs them (``claim_due``, ``flag_stale``) on a
table of many finished orders and a few open ones, then explained with the same
parameters. Their cost then follows the open orders, not the history
(``bench/bench_sweep.py`` measures it with 1,000,000 finished orders)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from scenarios import alixpay_callback
from sqlalchemy import event, insert, text

from orders.db import make_engine
from orders.models import Order
from orders.providers import STATUS_MAPS
from orders.store import Store

FINISHED = 5_000
OPEN = 40


def fill(store: Store) -> None:
    now = datetime.now(UTC)
    past = now - timedelta(days=30)
    rows: list[dict[str, Any]] = []
    for i in range(FINISHED + OPEN):
        done = i < FINISHED
        rows.append(
            dict(
                provider="alixpay",
                external_order_id=f"plan-{i}",
                status="SUCCESS" if done else "AWAITING_PAYMENT",
                rank=5 if done else 1,
                version=3 if done else 1,
                details={},
                poll_attempts=0,
                created_at=past,
                updated_at=past,
                next_poll_at=past,
                terminal_at=past if done else None,
            )
        )
    with store.engine.begin() as conn:
        conn.execute(insert(Order), rows)
        conn.execute(text("ANALYZE"))


@contextmanager
def captured(store: Store) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs on orders the store sends meanwhile, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM orders" in statement:
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", grab)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", grab)


def plan_of(store: Store, statement: str, parameters: Any) -> str:
    with store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        cursor = raw.cursor()  # type: ignore[union-attr]
        if conn.dialect.name == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            return "\n".join(str(row[-1]) for row in cursor.fetchall())
        cursor.execute("EXPLAIN " + statement, parameters)
        return "\n".join(str(row[0]) for row in cursor.fetchall())


def test_the_sweeps_queries_read_the_open_orders_indexes(database_url: str) -> None:
    store = Store(make_engine(database_url), STATUS_MAPS, {})
    try:
        fill(store)
        with captured(store) as claims:
            assert len(store.claim_due(10, 60, ["alixpay"])) == 10
        with captured(store) as stale:
            assert len(store.flag_stale(limit=10)) == 10
        (claim,) = claims
        assert "ix_orders_open_due" in plan_of(store, *claim), plan_of(store, *claim)
        for statement in stale:
            assert "ix_orders_open_unflagged" in plan_of(store, *statement), plan_of(store, *statement)
    finally:
        store.engine.dispose()


def test_a_new_store_locks_a_batchs_orders_through_the_unique_index(database_url: str) -> None:
    """A new deployment's tables have no statistics until autovacuum's first round (a
    minute by default). Before: PostgreSQL then read a batch's orders through an index on
    ``provider`` alone (``ix_orders_stuck_due``), every order of the provider filtered, so
    that a drain on a new store slowed as it went; now the store analyses the new tables
    once it has adopted ``FreshTables.AFTER`` orders, and plans the lock from what it holds."""
    store = Store(make_engine(database_url), STATUS_MAPS, {})
    try:
        orders = [f"fresh-{i:05}" for i in range(1100)]  # FreshTables.AFTER and more
        for start in range(0, len(orders), 100):
            store.apply(
                [alixpay_callback("AWAITING_PAYMENT", order) for order in orders[start : start + 100]]
            )
        with captured(store) as reads:
            outcomes = store.apply([alixpay_callback("PAYMENT_COMPLETED", order) for order in orders[::11]])
        assert {o.decision.value for o in outcomes} == {"applied"}
        (lock,) = [r for r in reads if "status_at" in r[0]]  # the one that reads whole orders
        plan = plan_of(store, *lock)
        assert "ix_orders_stuck_due" not in plan and "ix_orders_provider_status" not in plan, plan
        if store.engine.dialect.name == "sqlite":
            assert "sqlite_autoindex_orders" in plan, plan  # the unique (provider, id) index
        else:
            # Planned from statistics: about the 100 orders named (a guess said 1), read
            # through the unique index or, on a table this small, in one pass.
            estimate = int(re.search(r"rows=(\d+)", plan).group(1))  # type: ignore[union-attr]
            assert estimate >= 50, plan
            assert "uq_orders_provider_external" in plan or "Seq Scan on orders" in plan, plan
            with store.engine.connect() as conn:
                analysed = conn.scalar(
                    text(
                        "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relid = 'orders'::regclass"
                    )
                )
            assert analysed
    finally:
        store.engine.dispose()
