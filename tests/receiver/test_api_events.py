"""GET /api/events: the outbox notifications in id order, after an opaque cursor."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from apikit import OPS, PARTNER, app_for, seed_notification, seed_order, settings_for
from conftest import Keys
from flask.testing import FlaskClient
from redis import Redis
from scenarios import alixpay_sell

from config import Settings
from devkit.alixpay.sandbox import AlixSandbox
from orders.db import make_engine
from orders.providers import STATUS_MAPS
from orders.store import Store
from receiver.schemas import encode_cursor


@pytest.fixture
def settings(database_url: str, redis: Redis, keys: Keys, sandbox: AlixSandbox) -> Settings:
    return settings_for(database_url, redis, keys, sandbox.url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store(make_engine(settings.database_url), STATUS_MAPS, {})
    yield s
    s.engine.dispose()


@pytest.fixture
def client(settings: Settings, redis: Redis, store: Store) -> FlaskClient:
    return app_for(settings, redis, store).test_client()


def envelope(n: int) -> str:
    return json.dumps(
        {"type": "order.status_changed", "timestamp": f"2026-11-01T12:00:0{n}+00:00", "data": {"n": n}}
    )


def test_pages_in_id_order_and_the_cursor_stays_put_at_the_end(client: FlaskClient, store: Store) -> None:
    order = seed_order(store, "ev-1")
    ids = [seed_notification(store, order, v, envelope(v)) for v in range(1, 6)]
    first = client.get("/api/events?limit=2", headers=PARTNER).get_json()
    assert [e["webhook_id"] for e in first["events"]] == [f"msg_{ids[0]}", f"msg_{ids[1]}"]
    assert first["events"][0] == {
        "id": encode_cursor("events", ids[0]),
        "webhook_id": f"msg_{ids[0]}",
        "type": "order.status_changed",
        "timestamp": "2026-11-01T12:00:01+00:00",
        "data": {"n": 1},
    }
    assert first["next"] == first["events"][-1]["id"]
    seen = [e["data"]["n"] for e in first["events"]]
    cursor = first["next"]
    while True:
        page = client.get(f"/api/events?after={cursor}&limit=2", headers=OPS).get_json()
        if not page["events"]:
            assert page["next"] == cursor  # nothing new: ask again with the same cursor
            break
        seen += [e["data"]["n"] for e in page["events"]]
        cursor = page["next"]
    assert seen == [1, 2, 3, 4, 5]
    # A notification committed later is found from the cursor the partner kept.
    later = seed_notification(store, order, 6, envelope(6))
    page = client.get(f"/api/events?after={cursor}", headers=PARTNER).get_json()
    assert [e["webhook_id"] for e in page["events"]] == [f"msg_{later}"]


def test_an_empty_feed_gives_a_cursor_to_start_from(client: FlaskClient) -> None:
    body = client.get("/api/events", headers=PARTNER).get_json()
    assert body == {"events": [], "next": encode_cursor("events", 0)}


def test_creating_an_order_shows_up_in_the_feed(client: FlaskClient, sandbox: AlixSandbox) -> None:
    assert client.post("/api/orders/alixpay", json=alixpay_sell("feed-1"), headers=PARTNER).status_code == 201
    events = client.get("/api/events", headers=PARTNER).get_json()["events"]
    mine = [e for e in events if (e["data"] or {}).get("external_order_id") == "feed-1"]
    assert mine and mine[-1]["data"]["status"] == "AWAITING_PAYMENT"
    assert all(e["webhook_id"].startswith("msg_") for e in mine)
    assert "bankAccountNumber" not in json.dumps(events) and "0123456789" not in json.dumps(events)


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("after=garbage!", "after"),
        (f"after={encode_cursor('orders', 1)}", "after"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("from=1", "from"),
    ],
)
def test_a_bad_parameter_is_400(client: FlaskClient, query: str, parameter: str) -> None:
    resp = client.get(f"/api/events?{query}", headers=PARTNER)
    assert resp.status_code == 400 and resp.get_json()["fields"] == [parameter]


def test_the_feed_needs_a_token(client: FlaskClient) -> None:
    assert client.get("/api/events").status_code == 401
