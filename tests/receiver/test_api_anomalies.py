"""GET /api/anomalies and POST /api/anomalies/<id>/resolve (operator token)."""

from __future__ import annotations

from collections.abc import Iterator

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
from receiver.schemas import MAX_COMMENT


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
def anomalies(store: Store) -> dict[str, int]:
    alix = seed_order(store, "an-1")
    chg = seed_order(store, "an-2", provider="changelly")
    return {
        "conflict": seed_anomaly(store, alix, "conflict"),
        "stale": seed_anomaly(store, alix, "stale"),
        "mismatch": seed_anomaly(store, chg, "amount_mismatch"),
        "resolved": seed_anomaly(store, chg, "conflict", resolved_at=ago(hours=1), resolution="refunded"),
    }


def listed(client: FlaskClient, query: str = "") -> list[int]:
    resp = client.get(f"/api/anomalies{query}", headers=OPS)
    assert resp.status_code == 200, resp.get_json()
    return [a["id"] for a in resp.get_json()["anomalies"]]


def test_list_filters_and_pages(client: FlaskClient, anomalies: dict[str, int]) -> None:
    a = anomalies
    assert listed(client) == [a["resolved"], a["mismatch"], a["stale"], a["conflict"]]
    assert listed(client, "?state=open") == [a["mismatch"], a["stale"], a["conflict"]]
    assert listed(client, "?state=resolved") == [a["resolved"]]
    assert listed(client, "?kind=conflict") == [a["resolved"], a["conflict"]]
    assert listed(client, "?provider=changelly&state=open") == [a["mismatch"]]
    first = client.get("/api/anomalies?limit=3", headers=OPS).get_json()
    assert len(first["anomalies"]) == 3 and first["next"]
    rest = client.get(f"/api/anomalies?limit=3&cursor={first['next']}", headers=OPS).get_json()
    assert [x["id"] for x in rest["anomalies"]] == [a["conflict"]] and rest["next"] is None
    item = first["anomalies"][0]
    assert (item["provider"], item["external_order_id"], item["resolution"]) == (
        "changelly",
        "an-2",
        "refunded",
    )
    assert item["detail"] == {"why": "test"}


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("state=closed", "state"), ("kind=weird", "kind"), ("provider=x", "provider"), ("cursor=zzz", "cursor")],
)
def test_a_bad_filter_is_400(client: FlaskClient, query: str, parameter: str) -> None:
    resp = client.get(f"/api/anomalies?{query}", headers=OPS)
    assert resp.status_code == 400 and resp.get_json()["fields"] == [parameter]


def test_resolve_once_with_a_comment(client: FlaskClient, anomalies: dict[str, int], store: Store) -> None:
    target = anomalies["conflict"]
    resp = client.post(
        f"/api/anomalies/{target}/resolve", json={"comment": " paid out by hand "}, headers=OPS
    )
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["id"] == target and body["resolution"] == "paid out by hand" and body["resolved_at"]
    view = store.order_view("alixpay", "an-1")
    resolved = next(a for a in view.anomalies if a.id == target)
    assert resolved.resolution == "paid out by hand" and resolved.resolved_at is not None
    shown = client.get("/api/orders/alixpay/an-1", headers=PARTNER).get_json()
    assert next(a for a in shown["anomalies"] if a["id"] == target)["resolution"] == "paid out by hand"
    again = client.post(f"/api/anomalies/{target}/resolve", json={"comment": "again"}, headers=OPS)
    assert again.status_code == 409 and again.get_json()["code"] == "already_resolved"
    assert store.order_view("alixpay", "an-1").anomalies[0].resolution == "paid out by hand"  # unchanged
    assert listed(client, "?state=open") == [anomalies["mismatch"], anomalies["stale"]]


def test_resolving_an_unknown_anomaly_is_404(client: FlaskClient) -> None:
    resp = client.post("/api/anomalies/999999/resolve", json={"comment": "x"}, headers=OPS)
    assert resp.status_code == 404 and resp.get_json()["code"] == "anomaly_not_found"
    assert client.post("/api/anomalies/abc/resolve", json={"comment": "x"}, headers=OPS).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"comment": ""},
        {"comment": "   "},
        {"comment": 5},
        {"comment": "x" * (MAX_COMMENT + 1)},
        {"comment": "x", "y": 1},
    ],
)
def test_a_bad_comment_is_400_and_resolves_nothing(
    client: FlaskClient, anomalies: dict[str, int], store: Store, body: dict
) -> None:
    resp = client.post(f"/api/anomalies/{anomalies['stale']}/resolve", json=body, headers=OPS)
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["code"] == "invalid_payload" and resp.get_json()["fields"]
    assert anomalies["stale"] in listed(client, "?state=open")


def test_resolve_takes_json_only(client: FlaskClient, anomalies: dict[str, int]) -> None:
    resp = client.post(
        f"/api/anomalies/{anomalies['stale']}/resolve",
        data="comment=x",
        content_type="text/plain",
        headers=OPS,
    )
    assert resp.status_code == 415
    resp = client.post(
        f"/api/anomalies/{anomalies['stale']}/resolve",
        data="[1]",
        content_type="application/json",
        headers=OPS,
    )
    assert resp.status_code == 400
