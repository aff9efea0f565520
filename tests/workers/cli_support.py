"""Helpers for the ``rampwatch`` command's tests: run it in-process (click's CliRunner)
with the settings given as environment, in a working directory of the test's own
(so no ``.env`` of a checkout leaks in), and build orders through the real writer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from redis import Redis
from sqlalchemy import update

from orders.db import make_engine
from orders.events import Event
from orders.models import Order
from orders.providers import STATUS_MAPS
from orders.store import Store
from workers.cli import cli

CALLBACK_COVERS = ("provider_status", "kind", "fiat_amount")
PERSONAL = "NGUYEN VAN A 0123456789"  # stands for the personal data of raw bodies


def base_env(database_url: str, redis: Redis) -> dict[str, str]:
    port = redis.connection_pool.connection_kwargs["port"]
    return {"DATABASE_URL": database_url, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}


def run(args: Sequence[str], env: Mapping[str, str], cwd: Path, input: str | None = None) -> Result:
    """``rampwatch *args`` in-process; stdout and stderr apart (``result.stdout``, ``.stderr``)."""
    import os

    old = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, list(args), env=dict(env), input=input, catch_exceptions=False)
    finally:
        os.chdir(old)


def store_for(database_url: str, now: datetime | None = None) -> Store:
    clock = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    return Store(make_engine(database_url), STATUS_MAPS, {}, clock=clock)


def alix_event(order_id: str, status: str, *, source: str = "callback", at: datetime | None = None) -> Event:
    """An AliX IPN as the adapter makes it: its signature covers status, kind and amount."""
    moment = (at or datetime.now(UTC)).isoformat()
    return Event(
        provider="alixpay",
        external_order_id=order_id,
        provider_status=status,
        source=source,
        dedup_key=f"status:{status}",
        raw_body=f'{{"externalOrderId":"{order_id}","status":"{status}","bankAccountName":"{PERSONAL}"}}',
        received_at=moment,
        fetched_at=moment if source == "poll" else None,
        verified_by="ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY",
        kind="sell",
        fiat_amount="700000",
        fiat_currency="VND",
        covers=CALLBACK_COVERS if source == "callback" else (*CALLBACK_COVERS, "fiat_currency"),
        identity=f"{order_id}|{status}",
    )


def changelly_claim(order_id: str, provider_order_id: str, claim: str | None) -> Event:
    """A Changelly callback: its signature covers the order id only; the status is a claim."""
    return Event(
        provider="changelly",
        external_order_id=order_id,
        provider_status=None,
        source="callback",
        dedup_key=f"callback:{provider_order_id}:{claim}",
        raw_body=f'{{"orderId":"{provider_order_id}","status":"{claim}","email":"{PERSONAL}"}}',
        received_at=datetime.now(UTC).isoformat(),
        verified_by="CHANGELLY_CALLBACK_PUBLIC_KEY",
        provider_order_id=provider_order_id,
        covers=("provider_order_id",),
        claimed_status=claim,
        identity=f"{provider_order_id}|{claim}",
    )


def set_created(store: Store, order_id: str, when: datetime, **values: Any) -> None:
    with store.sessions.begin() as session:
        session.execute(
            update(Order).where(Order.external_order_id == order_id).values(created_at=when, **values)
        )
