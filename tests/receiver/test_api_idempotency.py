"""POST /api/orders/<provider> is idempotent: the provider is called once per order,
however often and however concurrently the creation is asked for."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from apikit import PARTNER, CreationCalls, app_for, settings_for
from conftest import Keys
from flask.testing import FlaskClient
from redis import Redis
from scenarios import alixpay_sell

from config import Settings
from devkit.alixpay.sandbox import AlixSandbox
from orders.db import make_engine
from orders.events import utcnow
from orders.providers import STATUS_MAPS, build_adapters
from orders.service import CREATION_FLIGHT, PENDING, request_hash
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


def post(client: FlaskClient, body: dict, key: str | None = None):
    headers = {**PARTNER, **({"Idempotency-Key": key} if key else {})}
    return client.post("/api/orders/alixpay", json=body, headers=headers)


def test_the_same_order_twice_replays_the_first_without_calling_the_provider(
    client: FlaskClient, sandbox: AlixSandbox
) -> None:
    calls = CreationCalls(sandbox)
    first = post(client, alixpay_sell("idem-1"))
    assert first.status_code == 201 and first.headers["Idempotent-Replayed"] == "false"
    again = post(client, alixpay_sell("idem-1"))
    assert again.status_code == 200, again.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert calls.count == 1
    # The same request spelt differently (the default kind written out, keys
    # in another order) is the same request: the hash is over the validated request.
    spelt = dict(reversed(list({**alixpay_sell("idem-1"), "kind": "sell"}.items())))
    assert post(client, spelt).status_code == 200
    assert calls.count == 1


def test_an_idempotency_key_replays_and_refuses_another_body(
    client: FlaskClient, sandbox: AlixSandbox
) -> None:
    calls = CreationCalls(sandbox)
    assert post(client, alixpay_sell("key-1"), key="k-123").status_code == 201
    replay = post(client, alixpay_sell("key-1"), key="k-123")
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    other = post(client, alixpay_sell("key-2"), key="k-123")
    assert other.status_code == 409
    assert other.get_json()["code"] == "idempotency_conflict"
    assert "k-123" in other.get_json()["error"]
    changed = post(client, alixpay_sell("key-1", fiatAmount=600000), key="k-123")
    assert changed.status_code == 409 and changed.get_json()["code"] == "idempotency_conflict"
    assert calls.count == 1
    assert sandbox.truth() == {"key-1": "AWAITING_PAYMENT"}


def test_the_same_order_id_with_another_body_and_no_key_is_409(
    client: FlaskClient, sandbox: AlixSandbox
) -> None:
    calls = CreationCalls(sandbox)
    assert post(client, alixpay_sell("body-1")).status_code == 201
    resp = post(client, alixpay_sell("body-1", bankAccountNumber="999"))
    assert resp.status_code == 409
    assert resp.get_json()["code"] == "idempotency_conflict" and "body-1" in resp.get_json()["error"]
    # Under a new key too: the order id is taken by a different request.
    assert post(client, alixpay_sell("body-1", bankAccountNumber="999"), key="new").status_code == 409
    assert calls.count == 1


def test_concurrent_identical_requests_call_the_provider_once(
    client: FlaskClient, sandbox: AlixSandbox
) -> None:
    calls = CreationCalls(sandbox, delay=0.5)
    answers: list = []
    start = threading.Barrier(6)

    def one() -> None:
        start.wait(timeout=5)
        resp = post(client, alixpay_sell("race-1"), key="race-key")
        answers.append((resp.status_code, resp.get_json(), resp.headers.get("Retry-After")))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert calls.count == 1
    statuses = sorted(status for status, _, _ in answers)
    assert len(answers) == 6 and statuses.count(201) == 1, answers
    for status, body, retry_after in answers:
        assert status in (200, 201, 409), body
        if status == 409:  # asked while the first still waited for the provider
            assert body["code"] == "creation_in_progress" and retry_after == "1"
    after = post(client, alixpay_sell("race-1"), key="race-key")
    assert after.status_code == 200 and after.get_json()["status"] == "AWAITING_PAYMENT"
    assert calls.count == 1


def test_a_refused_creation_replays_as_its_failed_order(client: FlaskClient, sandbox: AlixSandbox) -> None:
    sandbox.create_order("refused-1", 500000)  # AliX already has one: it refuses ours
    calls = CreationCalls(sandbox)
    first = post(client, alixpay_sell("refused-1"))
    assert first.status_code == 502 and first.get_json()["code"] == "provider_rejected"
    again = post(client, alixpay_sell("refused-1"))
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["status"] == "FAILED"
    assert again.get_json()["details"]["creation"] == "refused"
    assert calls.count == 1


def test_an_order_known_from_the_provider_is_not_created_again(
    client: FlaskClient, sandbox: AlixSandbox, store: Store, settings: Settings
) -> None:
    sandbox.create_order("adopted-1", 500000)
    adapter = build_adapters(settings)["alixpay"]
    store.apply([adapter.poll("adopted-1")])  # adopted: we did not create it
    calls = CreationCalls(sandbox)
    resp = post(client, alixpay_sell("adopted-1"))
    assert resp.status_code == 409 and resp.get_json()["code"] == "order_exists"
    assert calls.count == 0


def test_a_creation_in_flight_is_409_until_it_is_presumed_crashed(
    client: FlaskClient, sandbox: AlixSandbox, store: Store, settings: Settings
) -> None:
    """A claim whose call never ended (its process died) holds repeats off for
    CREATION_FLIGHT, then replays the order the reconciler now owns."""
    valid = build_adapters(settings)["alixpay"].validate_create(alixpay_sell("flight-1"))
    marker = PENDING + request_hash(valid)
    assert store.claim_creation("alixpay", "flight-1", None, marker) is None
    calls = CreationCalls(sandbox)
    busy = post(client, alixpay_sell("flight-1"))
    assert busy.status_code == 409 and busy.get_json()["code"] == "creation_in_progress"
    assert busy.headers["Retry-After"] == "1"
    other = post(client, alixpay_sell("flight-1", fiatAmount=1))
    assert other.status_code == 409 and other.get_json()["code"] == "idempotency_conflict"
    later = app_for(settings, client.application.extensions["rampwatch"].redis, store)
    later.extensions["rampwatch"].store.clock = lambda: utcnow() + CREATION_FLIGHT + timedelta(seconds=1)
    resp = later.test_client().post("/api/orders/alixpay", json=alixpay_sell("flight-1"), headers=PARTNER)
    assert resp.status_code == 200 and resp.get_json()["status"] == "CREATED"
    assert calls.count == 0


@pytest.mark.parametrize("key", ["", "has space", "x" * 201, "tab\tkey", "é"])
def test_a_bad_idempotency_key_is_400_naming_the_header(
    client: FlaskClient, sandbox: AlixSandbox, key: str
) -> None:
    calls = CreationCalls(sandbox)
    resp = client.post(
        "/api/orders/alixpay", json=alixpay_sell("bad-key"), headers={**PARTNER, "Idempotency-Key": key}
    )
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["code"] == "invalid_parameter" and resp.get_json()["fields"] == ["Idempotency-Key"]
    assert calls.count == 0
