"""GET /api/orders: filters, newest first, cursor pages; a bad filter is a 400 naming it."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from apikit import OPS, PARTNER, ago, app_for, seed_anomaly, seed_order, settings_for
from conftest import Keys
from flask.testing import FlaskClient
from redis import Redis

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


@pytest.fixture
def orders(store: Store) -> dict[str, int]:
    """Six orders, in id order, each standing out for one filter."""
    ids = {
        "old-open": seed_order(store, "old-open", created_at=ago(hours=5), updated_at=ago(hours=5)),
        "done": seed_order(store, "done", status="SUCCESS", created_at=ago(hours=6), updated_at=ago(hours=1)),
        "stuck": seed_order(
            store, "stuck", status="PROCESSING", stuck_at=ago(minutes=5), stuck_reason="slow"
        ),
        "chg": seed_order(store, "chg", provider="changelly", status="PROCESSING", updated_at=ago(minutes=2)),
        "anomalous": seed_order(store, "anomalous", status="ON_HOLD", created_at=ago(minutes=10)),
        "fresh": seed_order(store, "fresh", created_at=ago(minutes=1), updated_at=ago(minutes=1)),
    }
    seed_anomaly(store, ids["anomalous"])
    seed_anomaly(store, ids["done"], resolved_at=ago(minutes=1), resolution="fine")  # resolved: not open
    return ids


def listed(client: FlaskClient, query: str = "", headers: dict | None = None) -> list[str]:
    resp = client.get(f"/api/orders{query}", headers=headers or PARTNER)
    assert resp.status_code == 200, resp.get_json()
    return [o["external_order_id"] for o in resp.get_json()["orders"]]


def test_newest_first_in_pages_that_cover_everything_once(
    client: FlaskClient, orders: dict[str, int]
) -> None:
    newest_first = sorted(orders, key=orders.get, reverse=True)
    seen: list[str] = []
    pages = 0
    query = "?limit=4"
    while True:
        body = client.get(f"/api/orders{query}", headers=PARTNER).get_json()
        pages += 1
        seen += [o["external_order_id"] for o in body["orders"]]
        if body["next"] is None:
            break
        query = f"?limit=4&cursor={body['next']}"
    assert seen == newest_first and pages == 2
    assert listed(client) == newest_first  # limit 50 by default: one page
    # An exact fit says so: no empty page behind a cursor.
    assert client.get("/api/orders?limit=6", headers=PARTNER).get_json()["next"] is None


def test_each_filter(client: FlaskClient, orders: dict[str, int]) -> None:
    assert listed(client, "?provider=changelly") == ["chg"]
    assert listed(client, "?status=PROCESSING&status=SUCCESS") == ["chg", "stuck", "done"]
    assert listed(client, "?status=processing,on_hold") == ["anomalous", "chg", "stuck"]
    assert listed(client, "?provider=alixpay&status=PROCESSING") == ["stuck"]
    assert listed(client, "?open_longer_than=2h") == ["old-open"]
    assert listed(client, "?open_longer_than=5m") == ["anomalous", "old-open"]
    assert listed(client, "?open_longer_than=1h30m") == ["old-open"]
    since = quote(ago(minutes=30).isoformat())
    assert set(listed(client, f"?updated_since={since}")) == {"fresh", "stuck", "anomalous", "chg"}
    assert listed(client, "?stuck=true") == ["stuck"]
    assert "stuck" not in listed(client, "?stuck=false") and len(listed(client, "?stuck=false")) == 5
    assert listed(client, "?has_open_anomalies=true") == ["anomalous"]
    assert "anomalous" not in listed(client, "?has_open_anomalies=false")
    assert listed(client, "?stuck=false&has_open_anomalies=true&provider=alixpay") == ["anomalous"]


def test_the_summary_holds_stuck_and_open_anomalies(client: FlaskClient, orders: dict[str, int]) -> None:
    body = client.get("/api/orders?status=ON_HOLD,PROCESSING&provider=alixpay", headers=OPS).get_json()
    by_id = {o["external_order_id"]: o for o in body["orders"]}
    assert by_id["anomalous"]["open_anomalies"] == 1
    assert by_id["stuck"]["stuck_reason"] == "slow" and by_id["stuck"]["stuck_at"] is not None
    assert "timeline" not in by_id["stuck"]


def test_an_unencoded_plus_in_a_time_is_read_as_plus(client: FlaskClient, orders: dict[str, int]) -> None:
    since = ago(minutes=30).replace(microsecond=0).isoformat()  # ...+00:00, the + sent raw
    assert "+" in since
    assert set(listed(client, f"?updated_since={since}")) == {"fresh", "stuck", "anomalous", "chg"}


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("status=NOPE", "status"),
        ("status=SUCCESS,NOPE", "status"),
        ("provider=nosuch", "provider"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        (f"cursor={encode_cursor('anomalies', 3)}", "cursor"),  # another list's cursor
        (f"cursor={encode_cursor('events', 3)}", "cursor"),
        ("open_longer_than=2x", "open_longer_than"),
        ("open_longer_than=", "open_longer_than"),
        ("open_longer_than=-2h", "open_longer_than"),
        ("updated_since=2026-11-01T08:00:00", "updated_since"),  # no offset
        ("updated_since=yesterday", "updated_since"),
        ("stuck=maybe", "stuck"),
        ("has_open_anomalies=2", "has_open_anomalies"),
        ("sort=asc", "sort"),  # unknown: not silently ignored
        ("provider=alixpay&provider=fuspay", "provider"),
    ],
)
def test_a_bad_filter_is_400_naming_it(client: FlaskClient, query: str, parameter: str) -> None:
    resp = client.get(f"/api/orders?{query}", headers=PARTNER)
    assert resp.status_code == 400, resp.get_json()
    body = resp.get_json()
    assert body["code"] == "invalid_parameter" and body["fields"] == [parameter]
    assert parameter in body["error"]
