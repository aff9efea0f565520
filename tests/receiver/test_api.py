"""The /api endpoints: bearer token, order view, creation through the sandbox, reconcile.

The two tokens, idempotency, lists, anomalies, reconcile's wait, the events feed
and the OpenAPI spec have their own modules (``test_api_*.py``, ``test_openapi.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from conftest import Keys, alix_settings
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from scenarios import alixpay_sell

from config import Settings
from devkit.alixpay.sandbox import AlixSandbox
from orders.db import make_engine
from orders.providers import STATUS_MAPS, build_adapters
from orders.store import Store
from receiver import create_app
from workers.queue import POLLS

TOKEN = "api-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPS_TOKEN = "ops-token-0123456789abcdef"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
SELL = alixpay_sell("api-1")


@pytest.fixture
def settings(database_url: str, redis: Redis, keys: Keys, sandbox: AlixSandbox) -> Settings:
    port = redis.connection_pool.connection_kwargs["port"]
    return Settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        api_token=TOKEN,
        ops_token=OPS_TOKEN,
        providers={"alixpay": alix_settings(keys, sandbox.url, timeout=1.0)},
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store(make_engine(settings.database_url), STATUS_MAPS, {})
    yield s
    s.engine.dispose()


def client_for(settings: Settings, redis: Redis, store: Store):
    return create_app(settings, redis=redis, store=store, adapters=build_adapters(settings)).test_client()


def test_token_is_required_and_compared(settings: Settings, redis: Redis, store: Store) -> None:
    client = client_for(settings, redis, store)
    resp = client.get("/api/orders/alixpay/x")
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = client.get("/api/orders/alixpay/x", headers={"Authorization": "Bearer wrong-token-xxxxxxxx"})
    assert resp.status_code == 401 and resp.get_json()["code"] == "unauthorized"
    resp = client.get("/api/orders/alixpay/x", headers={"Authorization": f"Basic {TOKEN}"})
    assert resp.status_code == 401
    assert client.get("/api/orders/alixpay/x", headers=AUTH).status_code == 404
    closed = client_for(replace(settings, api_token=None, ops_token=None), redis, store)
    resp = closed.get("/api/orders/alixpay/x", headers=AUTH)
    assert resp.status_code == 403 and "RAMPWATCH_API_TOKEN" in resp.get_json()["error"]


def test_create_then_show(settings: Settings, redis: Redis, store: Store, sandbox: AlixSandbox) -> None:
    client = client_for(settings, redis, store)
    resp = client.post("/api/orders/alixpay", json=SELL, headers=AUTH)
    assert resp.status_code == 201, resp.get_json()
    view = resp.get_json()
    assert view["status"] == "AWAITING_PAYMENT" and view["version"] == 2
    assert sandbox.truth() == {"api-1": "AWAITING_PAYMENT"}
    shown = client.get("/api/orders/alixpay/api-1", headers=AUTH).get_json()
    assert shown["amounts"]["fiat_amount"] == "500000"
    assert shown["amounts"]["crypto_currency"] == "USDT"
    assert [(e["source"], e["decision"]) for e in shown["timeline"]] == [
        ("create", "applied"),
        ("create", "applied"),
    ]
    assert shown["timeline"][1]["verified_by"] == "ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY"
    assert "raw_body" not in shown["timeline"][0]
    raw = client.get("/api/orders/alixpay/api-1?raw=1", headers=OPS).get_json()
    assert '"externalOrderId":"api-1"' in raw["timeline"][0]["raw_body"]
    # Our own request is recorded without the personal data it carried (it stays with AliX).
    assert "0123456789" not in raw["timeline"][0]["raw_body"]


def test_create_validation_names_fields(settings: Settings, redis: Redis, store: Store) -> None:
    client = client_for(settings, redis, store)
    bad = {k: v for k, v in SELL.items() if k not in ("bankCode", "network")}
    resp = client.post("/api/orders/alixpay", json={**bad, "fiatAmount": "many"}, headers=AUTH)
    assert resp.status_code == 400
    assert resp.get_json()["fields"] == ["bankCode", "fiatAmount", "network"]
    assert store.order_view("alixpay", "api-1") is None  # nothing written
    resp = client.post("/api/orders/alixpay", data="x", content_type="text/plain", headers=AUTH)
    assert resp.status_code == 415


def test_provider_down_leaves_a_created_order_for_the_reconciler(
    settings: Settings, redis: Redis, store: Store, sandbox: AlixSandbox
) -> None:
    sandbox.stop()
    client = client_for(settings, redis, store)
    resp = client.post("/api/orders/alixpay", json=SELL, headers=AUTH)
    assert resp.status_code == 503 and resp.get_json()["code"] == "provider_unavailable"
    order = store.order_view("alixpay", "api-1")
    assert order.status == "CREATED" and order.next_poll_at is not None


def test_provider_refusal_is_502(
    settings: Settings, redis: Redis, store: Store, sandbox: AlixSandbox
) -> None:
    sandbox.create_order("api-1", 500000)  # AliX has it already: it refuses a second one
    client = client_for(settings, redis, store)
    refused = client.post("/api/orders/alixpay", json=SELL, headers=AUTH)
    assert refused.status_code == 502 and refused.get_json()["code"] == "provider_rejected"
    assert store.order_view("alixpay", "api-1").details["creation"] == "refused"


def test_reconcile_queues_one_poll(
    settings: Settings, redis: Redis, store: Store, sandbox: AlixSandbox
) -> None:
    client = client_for(settings, redis, store)
    assert client.post("/api/orders/alixpay", json=alixpay_sell("o-9"), headers=AUTH).status_code == 201
    first = client.post("/api/orders/alixpay/o-9/reconcile", headers=OPS)
    second = client.post("/api/orders/alixpay/o-9/reconcile", headers=OPS)
    assert (first.status_code, first.get_json()["status"]) == (202, "queued")
    assert second.get_json()["status"] == "already queued"
    assert Queue(POLLS, connection=redis, serializer=JSONSerializer).count == 1
    assert client.post("/api/orders/nosuch/o-9/reconcile", headers=OPS).status_code == 404
