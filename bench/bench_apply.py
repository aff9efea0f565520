"""Throughput of the single writer: events applied per second, one per transaction
and in batches of 100, on SQLite (and PostgreSQL when RAMPWATCH_TEST_POSTGRES_URL is set).
Each order gets a full AliX lifecycle plus one duplicate; prints one JSON line per case."""

from __future__ import annotations

from datetime import UTC, datetime

from _common import Timer, database, databases, emit

from orders.db import make_engine
from orders.events import Event
from orders.providers import STATUS_MAPS
from orders.providers.alixpay.adapter import COVERS
from orders.store import Store

LIFECYCLE = ["AWAITING_PAYMENT", "PAYMENT_COMPLETED", "PROCESSING_TOKEN_TRANSFER", "SUCCESS", "SUCCESS"]


def events(prefix: str, orders: int) -> list[Event]:
    now = datetime.now(UTC).isoformat()
    out = []
    for i in range(orders):
        for status in LIFECYCLE:
            out.append(
                Event(
                    provider="alixpay",
                    external_order_id=f"{prefix}-{i}",
                    provider_status=status,
                    source="callback",
                    dedup_key=f"status:{status}",
                    raw_body=f'{{"externalOrderId":"{prefix}-{i}","status":"{status}"}}',
                    received_at=now,
                    verified_by="ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY",
                    fiat_amount="100000",
                    covers=COVERS["callback"],
                )
            )
    return out


def main() -> None:
    for kind in databases():
        store = Store(make_engine(database(kind)), STATUS_MAPS, {})
        single = events("single", 100)
        with Timer() as t:
            for ev in single:
                store.apply([ev])
        emit(
            bench="apply",
            db=kind,
            mode="one event per transaction",
            events=len(single),
            seconds=round(t.seconds, 3),
            events_per_second=round(len(single) / t.seconds, 1),
        )
        batched = events("batch", 1000)
        with Timer() as t:
            for i in range(0, len(batched), 100):
                store.apply(batched[i : i + 100])
        emit(
            bench="apply",
            db=kind,
            mode="batches of 100",
            events=len(batched),
            seconds=round(t.seconds, 3),
            events_per_second=round(len(batched) / t.seconds, 1),
        )
        store.engine.dispose()


if __name__ == "__main__":
    main()
