"""What the console's test modules share: settings with the operator token, an app on the
real components (private Redis, the test's database, the AliX sandbox), a logged-in
test client, the CSRF token of a page, and orders made through the real writer.
Importable as ``consolekit`` from tests/console."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from conftest import Keys, app_on, token_settings
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from config import Settings
from orders.events import Event
from workers.services import Services, build_services

PARTNER_TOKEN = "partner-token-console-0123456789"
OPS_TOKEN = "ops-token-console-0123456789-ops"
PERSONAL_NAME = "NGUYEN VAN A"
PERSONAL_ACCOUNT = "0123456789012"
PERSONAL_EMAIL = "nguyen.van.a@example.com"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_settings(database_url: str, redis: Redis, keys: Keys, sandbox_url: str, **kw: Any) -> Settings:
    return token_settings(database_url, redis, keys, sandbox_url, (PARTNER_TOKEN, OPS_TOKEN), **kw)


console_app = app_on


@contextmanager
def console_services(database_url: str, redis: Redis, keys: Keys, sandbox_url: str) -> Iterator[Services]:
    """The workers' Services on the console's settings, installed for in-process jobs."""
    services = build_services(console_settings(database_url, redis, keys, sandbox_url), redis=redis)
    token = services.install()
    try:
        yield services
    finally:
        token.var.reset(token)
        services.store.engine.dispose()


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def log_in(client: FlaskClient, token: str = OPS_TOKEN) -> Any:
    page = client.get("/console/login")
    return client.post("/console/login", data={"token": token, "csrf_token": csrf_of(page.text)})


def logged_in(app: Flask) -> FlaskClient:
    client = app.test_client()
    assert log_in(client).status_code == 303
    return client


def post_form(client: FlaskClient, page: str, action: str, **fields: str) -> Any:
    """Submit a form of ``page`` to ``action`` with the page's CSRF token."""
    token = csrf_of(client.get(page).text)
    return client.post(action, data={"csrf_token": token, **fields})


def alix_callback(order_id: str, status: str, *, source: str = "callback", claim: str | None = None) -> Event:
    """An AliX event as the adapter makes it, carrying personal data in its raw body."""
    now = datetime.now(UTC).isoformat()
    body = (
        f'{{"externalOrderId":"{order_id}","status":"{status}","bankAccountName":"{PERSONAL_NAME}",'
        f'"bankAccountNumber":"{PERSONAL_ACCOUNT}","userEmail":"{PERSONAL_EMAIL}"}}'
    )
    return Event(
        provider="alixpay",
        external_order_id=order_id,
        provider_status=None if claim else status,
        source=source,
        dedup_key=f"{source}:{status}:{claim}",
        raw_body=body,
        received_at=now,
        fetched_at=now if source == "poll" else None,
        verified_by="ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY",
        kind="sell",
        fiat_amount=None if claim else "700000",
        fiat_currency="VND",
        covers=() if claim else ("provider_status", "kind", "fiat_amount"),
        claimed_status=claim,
        identity=f"{order_id}|{status}|{source}|{claim}",
    )
