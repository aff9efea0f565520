"""The sweep's query under load: 20,000 open orders, how long one bounded claim of 500
due orders takes (indexed next_poll_at), on SQLite (and PostgreSQL when configured)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from _common import Timer, database, databases, emit
from sqlalchemy import insert

from orders.db import make_engine
from orders.models import Order
from orders.providers import STATUS_MAPS
from orders.store import Store

ORDERS = 20_000


def main() -> None:
    now = datetime.now(UTC)
    for kind in databases():
        store = Store(make_engine(database(kind)), STATUS_MAPS, {}, clock=lambda: now)
        rows = [
            dict(
                provider="alixpay",
                external_order_id=f"s-{i}",
                status="AWAITING_PAYMENT",
                rank=10,
                version=1,
                details={},
                poll_attempts=0,
                next_poll_at=now - timedelta(seconds=i % 600),
                created_at=now,
                updated_at=now,
            )
            for i in range(ORDERS)
        ]
        with store.sessions.begin() as s:
            s.execute(insert(Order), rows)
        timings = []
        for _ in range(5):
            with Timer() as t:
                claimed = store.claim_due(500, 120, ["alixpay"])
            assert len(claimed) == 500
            timings.append(t.seconds)
        emit(
            bench="sweep_claim",
            db=kind,
            open_orders=ORDERS,
            batch=500,
            best_ms=round(min(timings) * 1000, 2),
            worst_ms=round(max(timings) * 1000, 2),
        )
        store.engine.dispose()


if __name__ == "__main__":
    main()
