"""POST /api/orders/<provider>/<id>/reconcile (operator): 404 for an unknown order,
and with ?wait=1 the outcome of the poll a real RQ worker runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from apikit import OPS, PARTNER, app_for, settings_for
from conftest import Keys
from flask import Flask
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from scenarios import alixpay_sell

from config import Settings
from devkit.alixpay.sandbox import AlixSandbox
from orders.events import utcnow
from workers.queue import POLLS
from workers.services import Services, build_services
from workers.worker import make_worker


@pytest.fixture
def runtime(database_url: str, redis: Redis, keys: Keys, sandbox: AlixSandbox) -> Iterator[Services]:
    settings: Settings = settings_for(database_url, redis, keys, sandbox.url)
    services = build_services(settings, redis=redis)
    token = services.install()
    yield services
    token.var.reset(token)
    services.store.engine.dispose()


def app_on(runtime: Services, redis: Redis, wait: float = 10.0) -> Flask:
    return app_for(runtime.settings, redis, runtime.store, reconcile_wait=wait)


def polls(redis: Redis) -> int:
    return Queue(POLLS, connection=redis, serializer=JSONSerializer).count


def in_thread(app: Flask, path: str) -> tuple[threading.Thread, list]:
    answers: list = []

    def run() -> None:
        resp = app.test_client().post(path, headers=OPS)
        answers.append((resp.status_code, resp.get_json()))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answers


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_an_unknown_order_is_404_and_queues_nothing(runtime: Services, redis: Redis) -> None:
    client = app_on(runtime, redis).test_client()
    resp = client.post("/api/orders/alixpay/nobody/reconcile", headers=OPS)
    assert resp.status_code == 404 and resp.get_json()["code"] == "order_not_found"
    assert client.post("/api/orders/alixpay/nobody/reconcile?wait=1", headers=OPS).status_code == 404
    assert polls(redis) == 0


def test_wait_returns_the_polls_outcome(runtime: Services, redis: Redis, sandbox: AlixSandbox) -> None:
    app = app_on(runtime, redis)
    client = app.test_client()
    assert client.post("/api/orders/alixpay", json=alixpay_sell("rc-1"), headers=PARTNER).status_code == 201
    sandbox.advance("rc-1", "PAYMENT_COMPLETED")  # no callback_url: only a poll can tell us
    thread, answers = in_thread(app, "/api/orders/alixpay/rc-1/reconcile?wait=1")
    wait_until(lambda: polls(redis) == 1)
    make_worker(runtime).work(burst=True)
    thread.join(timeout=15)
    ((status, body),) = answers
    assert status == 200, body
    assert body["status"] == "polled"
    assert body["order"] == {
        "status": "PROCESSING",  # AliX's PAYMENT_COMPLETED is our PROCESSING
        "version": 3,
        "provider_status": "PAYMENT_COMPLETED",
        "decision": "applied",
    }
    assert runtime.store.order_view("alixpay", "rc-1").status == "PROCESSING"


def test_wait_follows_a_poll_already_queued(runtime: Services, redis: Redis, sandbox: AlixSandbox) -> None:
    app = app_on(runtime, redis)
    assert (
        app.test_client().post("/api/orders/alixpay", json=alixpay_sell("rc-2"), headers=PARTNER).status_code
        == 201
    )
    assert runtime.queues.enqueue_poll("alixpay", "rc-2", reason="sweep")
    thread, answers = in_thread(app, "/api/orders/alixpay/rc-2/reconcile?wait=1")
    time.sleep(0.3)
    assert polls(redis) == 1  # the same job: no second poll
    make_worker(runtime).work(burst=True)
    thread.join(timeout=15)
    ((status, body),) = answers
    assert status == 200 and body["order"]["decision"] == "confirmed"


def test_a_wait_that_runs_out_is_202_and_the_poll_stays_queued(
    runtime: Services, redis: Redis, sandbox: AlixSandbox
) -> None:
    client = app_on(runtime, redis, wait=0.3).test_client()
    assert client.post("/api/orders/alixpay", json=alixpay_sell("rc-3"), headers=PARTNER).status_code == 201
    started = time.monotonic()
    resp = client.post("/api/orders/alixpay/rc-3/reconcile?wait=1", headers=OPS)
    assert time.monotonic() - started < 2
    assert resp.status_code == 202 and resp.get_json()["status"] == "pending"
    assert "0.3 s" in resp.get_json()["detail"]
    assert polls(redis) == 1


def test_a_poll_that_fails_for_good_is_502(runtime: Services, redis: Redis, sandbox: AlixSandbox) -> None:
    """An order we recorded but AliX does not know: the poll is a data error, failed at once."""
    adapter = runtime.adapters["alixpay"]
    runtime.store.apply([adapter.creation_event(adapter.validate_create(alixpay_sell("rc-4")), utcnow())])
    app = app_on(runtime, redis)
    thread, answers = in_thread(app, "/api/orders/alixpay/rc-4/reconcile?wait=1")
    wait_until(lambda: polls(redis) == 1)
    make_worker(runtime).work(burst=True)
    thread.join(timeout=15)
    ((status, body),) = answers
    assert status == 502 and body["code"] == "poll_failed", body
    assert "Traceback" not in body["error"]


def test_a_bad_wait_value_is_400(runtime: Services, redis: Redis) -> None:
    resp = (
        app_on(runtime, redis).test_client().post("/api/orders/alixpay/x/reconcile?wait=maybe", headers=OPS)
    )
    assert resp.status_code == 400 and resp.get_json()["fields"] == ["wait"]
