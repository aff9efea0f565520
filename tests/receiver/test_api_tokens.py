"""The two tokens: the partner's reads and creates, the operator's does that and more
(raw bodies, anomalies, reconcile); each refusal is JSON saying which token is missing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from apikit import OPS, OPS_TOKEN, PARTNER, PARTNER_TOKEN, app_for, seed_anomaly, seed_order, settings_for
from conftest import Keys
from flask.testing import FlaskClient
from redis import Redis
from scenarios import alixpay_sell

from config import Settings
from devkit.alixpay.sandbox import AlixSandbox
from orders.db import make_engine
from orders.providers import STATUS_MAPS
from orders.store import Store


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


def partner_calls(client: FlaskClient) -> list[tuple[str, str, dict | None]]:
    return [
        ("POST", "/api/orders/alixpay", alixpay_sell("tok-1")),
        ("GET", "/api/orders/alixpay/tok-1", None),
        ("GET", "/api/orders", None),
        ("GET", "/api/events", None),
    ]


def test_the_partner_token_creates_reads_lists_and_follows_events(client: FlaskClient) -> None:
    expected = [201, 200, 200, 200]
    for (method, path, body), status in zip(partner_calls(client), expected, strict=True):
        resp = client.open(path, method=method, json=body, headers=PARTNER)
        assert resp.status_code == status, (path, resp.get_json())


def test_the_ops_token_may_do_what_the_partner_may(client: FlaskClient) -> None:
    expected = [201, 200, 200, 200]
    for (method, path, body), status in zip(partner_calls(client), expected, strict=True):
        resp = client.open(path, method=method, json=body, headers=OPS)
        assert resp.status_code == status, (path, resp.get_json())


def test_raw_bodies_need_the_ops_token(client: FlaskClient) -> None:
    assert client.post("/api/orders/alixpay", json=alixpay_sell("raw-1"), headers=PARTNER).status_code == 201
    refused = client.get("/api/orders/alixpay/raw-1?raw=1", headers=PARTNER)
    assert refused.status_code == 403
    assert refused.get_json()["code"] == "forbidden"
    assert "RAMPWATCH_OPS_TOKEN" in refused.get_json()["error"] and "raw" in refused.get_json()["error"]
    assert "raw_body" not in refused.get_data(as_text=True)
    shown = client.get("/api/orders/alixpay/raw-1?raw=1", headers=OPS).get_json()
    assert all("raw_body" in e for e in shown["timeline"])
    # raw=0 is the plain view, for either token.
    assert client.get("/api/orders/alixpay/raw-1?raw=0", headers=PARTNER).status_code == 200


def test_operator_endpoints_refuse_the_partner_token(client: FlaskClient, store: Store) -> None:
    anomaly = seed_anomaly(store, seed_order(store, "op-1"))
    calls = [
        ("GET", "/api/anomalies", None),
        ("POST", f"/api/anomalies/{anomaly}/resolve", {"comment": "checked"}),
        ("POST", "/api/orders/alixpay/op-1/reconcile", None),
    ]
    for method, path, body in calls:
        resp = client.open(path, method=method, json=body, headers=PARTNER)
        assert resp.status_code == 403, path
        assert "RAMPWATCH_OPS_TOKEN" in resp.get_json()["error"]
        assert client.open(path, method=method, json=body, headers=OPS).status_code in (200, 202), path


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer wrong-token-0123456789", f"Basic {PARTNER_TOKEN}", f"Bearer {PARTNER_TOKEN}x"],
)
def test_a_missing_or_wrong_token_is_401(client: FlaskClient, authorization: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for path in ("/api/orders", "/api/anomalies", "/api/events"):
        resp = client.get(path, headers=headers)
        assert resp.status_code == 401 and resp.get_json()["code"] == "unauthorized", path
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_without_an_ops_token_operator_endpoints_are_closed(
    settings: Settings, redis: Redis, store: Store
) -> None:
    client = app_for(replace(settings, ops_token=None), redis, store).test_client()
    resp = client.get("/api/anomalies", headers=PARTNER)
    assert resp.status_code == 403 and "RAMPWATCH_OPS_TOKEN is not set" in resp.get_json()["error"]
    assert client.get("/api/anomalies", headers=OPS).status_code == 401  # no such token now
    assert client.get("/api/anomalies").status_code == 401
    assert client.get("/api/orders", headers=PARTNER).status_code == 200


def test_with_only_the_ops_token_the_partner_endpoints_take_it(
    settings: Settings, redis: Redis, store: Store
) -> None:
    client = app_for(replace(settings, api_token=None), redis, store).test_client()
    assert client.get("/api/orders", headers=OPS).status_code == 200
    assert client.get("/api/orders", headers=PARTNER).status_code == 401
    closed = app_for(replace(settings, api_token=None, ops_token=None), redis, store).test_client()
    resp = closed.get("/api/orders", headers=OPS)
    assert resp.status_code == 403 and "RAMPWATCH_API_TOKEN" in resp.get_json()["error"]


def test_every_api_view_names_its_token(client: FlaskClient) -> None:
    """A new /api endpoint cannot be open by accident: each view requires a role,
    but the spec (which holds no data)."""
    app = client.application
    roles = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api"):
            roles[rule.rule] = getattr(app.view_functions[rule.endpoint], "required_role", None)
    assert roles.pop("/api/openapi.json") is None
    assert roles == {
        "/api/orders/<provider>": "partner",
        "/api/orders/<provider>/<external_order_id>": "partner",
        "/api/orders": "partner",
        "/api/events": "partner",
        "/api/orders/<provider>/<external_order_id>/reconcile": "ops",
        "/api/anomalies": "ops",
        "/api/anomalies/<int:anomaly_id>/resolve": "ops",
    }


def test_tokens_are_not_echoed(client: FlaskClient) -> None:
    for headers in (PARTNER, {"Authorization": "Bearer nope-nope-nope-nope"}):
        resp = client.get("/api/anomalies", headers=headers)
        assert PARTNER_TOKEN not in resp.get_data(as_text=True)
        assert OPS_TOKEN not in resp.get_data(as_text=True)
