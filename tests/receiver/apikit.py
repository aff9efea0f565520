"""What the /api test modules share: the two tokens, settings with both, an app on
the real components (private Redis, the AliX sandbox on loopback, the test's
database), rows seeded straight into the tables for the list readers, and a
count of the sandbox's creation calls. Importable as ``apikit`` from tests/receiver."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import Keys, app_on, token_settings
from redis import Redis

from config import Settings
from devkit.alixpay.sandbox import AlixSandbox
from orders.models import Anomaly, Notification, Order
from orders.store import Store

PARTNER_TOKEN = "partner-token-0123456789abcdef"
OPS_TOKEN = "ops-token-0123456789abcdef-ops"
PARTNER = {"Authorization": f"Bearer {PARTNER_TOKEN}"}
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def settings_for(database_url: str, redis: Redis, keys: Keys, sandbox_url: str, **overrides: Any) -> Settings:
    return token_settings(database_url, redis, keys, sandbox_url, (PARTNER_TOKEN, OPS_TOKEN), **overrides)


app_for = app_on


class CreationCalls:
    """Counts the creation requests the AliX sandbox receives (over HTTP), each held
    ``delay`` seconds first so that racing requests overlap."""

    def __init__(self, sandbox: AlixSandbox, delay: float = 0.0):
        self.count = 0
        self._lock = threading.Lock()
        original: Callable[..., Any] = sandbox._api_create

        def counted(*args: Any) -> Any:
            with self._lock:
                self.count += 1
            time.sleep(delay)
            return original(*args)

        sandbox._api_create = counted  # type: ignore[method-assign]


def seed_order(store: Store, external_order_id: str, **columns: Any) -> int:
    """An order row as the writer leaves one (tests of the readers seed them directly)."""
    values: dict[str, Any] = dict(
        provider="alixpay",
        external_order_id=external_order_id,
        status="AWAITING_PAYMENT",
        rank=1,
        version=1,
        details={},
        poll_attempts=0,
        created_at=datetime.now(UTC),
        updated_at=datetime.now(UTC),
    )
    values.update(columns)
    with store.sessions.begin() as session:
        order = Order(**values)
        session.add(order)
        session.flush()
        return order.id


def seed_anomaly(store: Store, order_id: int, kind: str = "conflict", **columns: Any) -> int:
    with store.sessions.begin() as session:
        anomaly = Anomaly(order_id=order_id, kind=kind, detail='{"why": "test"}', created_at=NOW, **columns)
        session.add(anomaly)
        session.flush()
        return anomaly.id


def seed_notification(store: Store, order_id: int, version: int, body: str) -> int:
    with store.sessions.begin() as session:
        row = Notification(
            order_id=order_id, kind="order.status_changed", version=version, body=body, created_at=NOW
        )
        session.add(row)
        session.flush()
        return row.id


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)
