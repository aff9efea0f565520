"""/api/openapi.json: a valid OpenAPI document, served without a token, covering
every route under /api and /webhooks, and describing what the API really answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apikit import OPS, PARTNER, app_for, seed_anomaly, seed_notification, seed_order, settings_for
from conftest import Keys
from flask.testing import FlaskClient
from marshmallow import Schema
from openapi_spec_validator import validate
from redis import Redis
from scenarios import alixpay_sell

from config import Settings
from devkit.alixpay.sandbox import AlixSandbox
from orders.db import make_engine
from orders.providers import STATUS_MAPS
from orders.store import Store
from receiver import schemas
from receiver.openapi import openapi_path


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


def test_the_spec_is_valid_and_public(client: FlaskClient) -> None:
    resp = client.get("/api/openapi.json")
    assert resp.status_code == 200
    spec = resp.get_json()
    validate(spec)
    assert spec["openapi"].startswith("3.")
    assert client.get("/api/openapi.json", headers=PARTNER).get_json() == spec


def test_every_api_and_webhook_route_is_in_the_spec(client: FlaskClient) -> None:
    spec = client.get("/api/openapi.json").get_json()
    missing = []
    for rule in client.application.url_map.iter_rules():
        if not rule.rule.startswith(("/api", "/webhooks")):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if method.lower() not in spec["paths"].get(openapi_path(rule.rule), {}):
                missing.append(f"{method} {rule.rule}")
    assert missing == []
    assert {"/healthz", "/readyz", "/webhooks/{provider}", "/api/anomalies/{anomaly_id}/resolve"} <= set(
        spec["paths"]
    )


def test_security_follows_the_token_each_view_requires(client: FlaskClient) -> None:
    paths = client.get("/api/openapi.json").get_json()["paths"]
    schemes = client.get("/api/openapi.json").get_json()["components"]["securitySchemes"]
    assert schemes["partner"] == {"type": "http", "scheme": "bearer", "description": "RAMPWATCH_API_TOKEN"}
    assert paths["/api/orders"]["get"]["security"] == [{"partner": []}, {"operator": []}]
    assert paths["/api/anomalies"]["get"]["security"] == [{"operator": []}]
    assert paths["/api/orders/{provider}/{external_order_id}/reconcile"]["post"]["security"] == [
        {"operator": []}
    ]
    assert paths["/webhooks/{provider}"]["post"]["security"] == []
    error = paths["/api/orders"]["get"]["responses"]["400"]
    assert error == {"$ref": "#/components/responses/E400"}


def test_query_parameters_come_from_the_validating_schemas(client: FlaskClient) -> None:
    paths = client.get("/api/openapi.json").get_json()["paths"]
    documented = {p["name"] for p in paths["/api/orders"]["get"]["parameters"]}
    assert documented == set(schemas.OrderListQuery().fields)
    events = {p["name"] for p in paths["/api/events"]["get"]["parameters"]}
    assert events == {"after", "limit"}
    create = paths["/api/orders/{provider}"]["post"]["parameters"]
    assert any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in create)


def check(schema: type[Schema], answer: object) -> None:
    """The answer holds exactly what its documented schema describes (unknown keys fail)."""
    errors = schema().validate(answer)
    assert errors == {}, errors


def test_real_answers_match_their_schemas(client: FlaskClient, store: Store, sandbox: AlixSandbox) -> None:
    created = client.post("/api/orders/alixpay", json=alixpay_sell("doc-1"), headers=PARTNER)
    check(schemas.OrderViewSchema, created.get_json())
    check(schemas.OrderViewSchema, client.get("/api/orders/alixpay/doc-1?raw=1", headers=OPS).get_json())
    order_id = seed_order(store, "doc-2", stuck_at=None)
    seed_anomaly(store, order_id)
    seed_notification(store, order_id, 1, '{"type":"order.status_changed","timestamp":"t","data":{}}')
    check(schemas.OrderListSchema, client.get("/api/orders", headers=PARTNER).get_json())
    check(schemas.AnomalyListSchema, client.get("/api/anomalies", headers=OPS).get_json())
    check(schemas.EventsPageSchema, client.get("/api/events", headers=PARTNER).get_json())
    check(schemas.ReconcileSchema, client.post("/api/orders/alixpay/doc-1/reconcile", headers=OPS).get_json())
    check(schemas.ErrorSchema, client.get("/api/orders?limit=0", headers=PARTNER).get_json())
    check(schemas.ErrorSchema, client.get("/api/orders").get_json())
