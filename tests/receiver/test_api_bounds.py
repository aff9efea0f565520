"""The API's answers at its edges: order ids no order can have, and a database that is
down or does not answer. Each is a JSON 4xx or a 503 with ``Retry-After``, never a 500.

Found by a hostile tester on PostgreSQL, whose text columns cannot hold NUL:
``GET /api/orders/alixpay/a%00b`` was a 500, and an order id with NUL reached a job
that failed on every retry; during a database outage ``/api`` answered 500.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Keys, alix_settings
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from scenarios import alixpay_sell

from config import Settings
from devkit.localredis import free_port
from orders.db import make_engine
from orders.providers import STATUS_MAPS, build_adapters
from orders.store import Store
from receiver import WEB_DATABASE_WAIT, create_app
from workers.queue import EVENTS, POLLS
from workers.stream import STREAM

TOKEN = "bounds-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPS_TOKEN = "bounds-ops-token-0123456789"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
SELL = alixpay_sell("outage-1")


def settings_on(database_url: str, redis: Redis, keys: Keys) -> Settings:
    port = redis.connection_pool.connection_kwargs["port"]
    return Settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        api_token=TOKEN,
        ops_token=OPS_TOKEN,
        providers={"alixpay": alix_settings(keys, "http://127.0.0.1:9", timeout=1.0)},
    )


@pytest.fixture
def client(database_url: str, redis: Redis, keys: Keys) -> Iterator[FlaskClient]:
    settings = settings_on(database_url, redis, keys)
    store = Store(make_engine(database_url), STATUS_MAPS, {})
    yield create_app(settings, redis=redis, store=store, adapters=build_adapters(settings)).test_client()
    store.engine.dispose()


def jobs(redis: Redis, name: str) -> list[str]:
    return Queue(name, connection=redis, serializer=JSONSerializer).job_ids


@pytest.mark.parametrize("path_id", ["a%00b", "a%01b", "%00", "tab%09id", "x" * 129])
def test_an_order_id_no_order_can_have_is_400(client: FlaskClient, path_id: str) -> None:
    resp = client.get(f"/api/orders/alixpay/{path_id}", headers=AUTH)
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    assert resp.get_json()["code"] == "invalid_payload"
    assert resp.get_json()["fields"] == ["external_order_id"]


def test_ordinary_odd_ids_still_reach_the_store(client: FlaskClient) -> None:
    # Printable, non-ASCII, spaces, 128 characters: ids an order may have, so 404, not 400.
    for path_id in ("caf%C3%A9", "with%20space", "x" * 128, "%F0%9F%92%B8"):
        resp = client.get(f"/api/orders/alixpay/{path_id}", headers=AUTH)
        assert resp.status_code == 404, (path_id, resp.get_json())
        assert resp.get_json()["code"] == "order_not_found"


def test_reconcile_of_an_id_with_nul_queues_nothing(client: FlaskClient, redis: Redis) -> None:
    resp = client.post("/api/orders/alixpay/a%00b/reconcile", headers=OPS)
    assert resp.status_code == 400 and resp.get_json()["fields"] == ["external_order_id"]
    assert jobs(redis, POLLS) == []
    # The same call with a usable id reaches the store (the refusal above is about the id):
    # no such order, so nothing is queued either.
    resp = client.post("/api/orders/alixpay/ab/reconcile", headers=OPS)
    assert resp.status_code == 404 and resp.get_json()["code"] == "order_not_found"
    assert jobs(redis, POLLS) == []


def test_a_forged_callback_naming_an_id_with_nul_queues_no_healing_poll(
    client: FlaskClient, redis: Redis
) -> None:
    body = {
        "externalOrderId": "a\u0000b",
        "type": "sell",
        "fiatAmount": 1,
        "status": "SUCCESS",
        "signature": "AAAA",
    }
    resp = client.post("/webhooks/alixpay", data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 400
    assert jobs(redis, POLLS) == [] and jobs(redis, EVENTS) == [] and redis.xlen(STREAM) == 0


def outage_urls(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    return {
        "postgresql-refusing-connections": f"postgresql+psycopg://rampwatch@127.0.0.1:{free_port()}/gone",
        "sqlite-file-unopenable": f"sqlite:///{folder}",  # a folder where the file should be
    }


@pytest.mark.parametrize("outage", ["postgresql-refusing-connections", "sqlite-file-unopenable"])
def test_the_api_during_a_database_outage_is_503_with_retry_after(
    outage: str, tmp_path: Path, redis: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_on(outage_urls(tmp_path)[outage], redis, keys)
    app = create_app(settings, redis=redis)  # the web process's own store, as gunicorn builds it
    client = app.test_client()
    try:
        calls = [
            ("GET", "/api/orders/alixpay/x", None),
            ("POST", "/api/orders/alixpay", SELL),
        ]
        for method, path, body in calls:
            started = time.monotonic()
            resp = client.open(path, method=method, json=body, headers=AUTH)
            assert time.monotonic() - started < WEB_DATABASE_WAIT + 2
            assert resp.status_code == 503, (path, resp.get_data(as_text=True)[:300])
            assert resp.get_json()["code"] == "database_unavailable"
            assert int(resp.headers["Retry-After"]) > 0
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.get_json()["checks"]["database"].startswith("unavailable")
        # Reconcile looks the order up before queueing its poll (an unknown order is a 404).
        resp = client.post("/api/orders/alixpay/x/reconcile", headers=OPS)
        assert resp.status_code == 503 and resp.get_json()["code"] == "database_unavailable"
        assert jobs(redis, POLLS) == []
    finally:
        app.extensions["rampwatch"].store.engine.dispose()
    assert "Traceback" not in caplog.text
    assert "database unavailable: OperationalError" in caplog.text
