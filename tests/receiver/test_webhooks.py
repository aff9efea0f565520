"""The receiver's answer to every kind of callback, on a real Redis."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
from conftest import SECRET, WEBHOOK_SECRET, Keys, alix_settings, queued_callbacks
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from config import Settings
from orders.db import make_engine
from orders.providers import STATUS_MAPS, build_adapters
from orders.providers.alixpay import signing
from orders.store import Store
from receiver import create_app
from workers.drain import Drainer
from workers.queue import EVENTS, HEAL_JOB, POLLS, connect


def ipn(keys: Keys, *, secret: str = WEBHOOK_SECRET, key=None, **fields) -> dict:
    body = {
        "externalOrderId": "ord-1",
        "type": "sell",
        "fiatAmount": 100000,
        "paidAmount": 0,
        "tokenTransfer": {"currency": "USDT", "network": "TRC20", "txHash": "0xabc"},
        "bankTransfer": {"bankAccountNumber": "0123456789", "bankAccountName": "NGUYEN VAN A"},
        "status": "AWAITING_PAYMENT",
    }
    body.update(fields)
    body["signature"] = signing.sign(signing.response_fields(body), secret, key or keys.alix.private)
    return body


@pytest.fixture
def settings(database_url: str, redis: Redis, keys: Keys) -> Settings:
    url = redis.connection_pool.connection_kwargs
    return Settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{url['port']}/0",
        api_token="t" * 32,
        providers={"alixpay": alix_settings(keys, "http://127.0.0.1:9")},
    )


@pytest.fixture
def app(settings: Settings, redis: Redis):
    store = Store(make_engine(settings.database_url), STATUS_MAPS, {})
    app = create_app(settings, redis=redis, store=store, adapters=build_adapters(settings))
    app.testing = True
    yield app
    store.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, body, content_type="application/json"):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post("/webhooks/alixpay", data=data, content_type=content_type)


def jobs_in(redis: Redis, name: str) -> list[Job]:
    q = Queue(name, connection=redis, serializer=JSONSerializer)
    return [Job.fetch(i, connection=redis, serializer=JSONSerializer) for i in q.job_ids]


def test_valid_ipn_is_enqueued_with_its_exact_payload(client, redis: Redis, keys: Keys) -> None:
    body = ipn(keys)
    raw = json.dumps(body)
    resp = post(client, raw)
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "accepted"}
    (event,) = queued_callbacks(redis)
    assert jobs_in(redis, EVENTS) == []  # one stream entry, no RQ job
    assert event.provider == "alixpay" and event.external_order_id == "ord-1"
    assert event.provider_status == "AWAITING_PAYMENT" and event.source == "callback"
    assert event.dedup_key == "status:AWAITING_PAYMENT"
    assert event.raw_body == raw
    assert event.verified_by == "ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY"
    assert event.fiat_amount == "100000"
    # The IPN's signature does not cover tx hashes or bank data: the event carries none.
    assert event.details == {}
    assert datetime.fromisoformat(event.received_at).tzinfo is not None


def test_duplicate_delivery_is_queued_and_applied_once(client, app, redis: Redis, keys: Keys) -> None:
    """Both deliveries are acknowledged (each is durably queued); the store's dedup, the
    guarantee, records the second as nothing."""
    raw = json.dumps(ipn(keys))
    assert post(client, raw).status_code == 200
    assert post(client, raw).status_code == 200
    first, second = queued_callbacks(redis)
    assert first.fingerprint() == second.fingerprint()
    services = app.extensions["rampwatch"]
    assert Drainer(services, "test").drain() == 2
    order = services.store.order_view("alixpay", "ord-1")
    assert [e.decision for e in order.events] == ["applied"]


def test_partner_secret_and_rotated_key_verify_and_are_recorded(
    settings: Settings, redis: Redis, keys
) -> None:
    from dataclasses import replace

    from config import Named

    rotating = replace(
        settings,
        providers={
            "alixpay": replace(
                settings.provider("alixpay"),
                public_keys=(
                    Named("ALIXPAY_PUBLIC_KEY", keys.alix.public),
                    Named("ALIXPAY_PUBLIC_KEY_PREVIOUS", keys.alix_old.public),
                ),
            )
        },
    )
    store = Store(make_engine(settings.database_url), STATUS_MAPS, {})
    client = create_app(rotating, redis=redis, store=store, adapters=build_adapters(rotating)).test_client()
    cases = [
        (ipn(keys, externalOrderId="a", secret=SECRET), "ALIXPAY_PUBLIC_KEY+ALIXPAY_SECRET_KEY"),
        (
            ipn(keys, secret=WEBHOOK_SECRET, key=keys.alix_old.private, externalOrderId="b"),
            "ALIXPAY_PUBLIC_KEY_PREVIOUS+ALIXPAY_WEBHOOK_SECRET_KEY",
        ),
    ]
    for body, _expected in cases:
        resp = client.post("/webhooks/alixpay", data=json.dumps(body), content_type="application/json")
        assert resp.status_code == 200
    recorded = sorted(e.verified_by for e in queued_callbacks(redis))
    assert recorded == sorted(e for _, e in cases)
    # Without the previous key configured, the old key's signature is refused.
    resp = post(
        create_app(settings, redis=redis, store=store, adapters=build_adapters(settings)).test_client(),
        cases[1][0],
    )
    assert resp.status_code == 401
    store.engine.dispose()


def test_error_table(client, redis: Redis, keys: Keys) -> None:
    cases = [
        (ipn(keys, secret="wrong"), "application/json", 401, "invalid_signature"),
        (
            {k: v for k, v in ipn(keys).items() if k != "signature"},
            "application/json",
            401,
            "invalid_signature",
        ),
        ({**ipn(keys), "signature": "!!not-base64!!"}, "application/json", 401, "invalid_signature"),
        ({**ipn(keys), "status": "SUCCESS"}, "application/json", 401, "invalid_signature"),
        ({**ipn(keys), "fiatAmount": 100001}, "application/json", 401, "invalid_signature"),
        (b"{not json", "application/json", 400, "invalid_payload"),
        (b"\xff\xfe", "application/json", 400, "invalid_payload"),
        (b"[1, 2]", "application/json", 400, "invalid_payload"),
        (json.dumps(ipn(keys)), "text/plain", 415, "unsupported_media_type"),
        (json.dumps(ipn(keys)), "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"a": "' + b"x" * (64 * 1024) + b'"}', "application/json", 413, "request_entity_too_large"),
    ]
    for body, ctype, status, code in cases:
        resp = post(client, body, ctype)
        assert resp.status_code == status, (body if len(str(body)) < 200 else "big", resp.get_json())
        payload = resp.get_json()
        assert payload["code"] == code and payload["error"]
    assert queued_callbacks(redis) == [] and jobs_in(redis, EVENTS) == []


def test_missing_fields_are_named(client, keys: Keys) -> None:
    body = ipn(keys)
    del body["status"]
    del body["fiatAmount"]
    resp = post(client, body)
    assert resp.status_code == 400
    assert resp.get_json()["fields"] == ["fiatAmount", "status"]
    assert "fiatAmount" in resp.get_json()["error"]
    resp = post(client, {**ipn(keys), "fiatAmount": "lots"})
    assert resp.status_code == 400 and resp.get_json()["fields"] == ["fiatAmount"]


def test_unknown_and_disabled_providers_are_404(settings: Settings, redis: Redis, keys: Keys) -> None:
    from dataclasses import replace

    disabled = replace(settings, providers={})
    store = Store(make_engine(settings.database_url), STATUS_MAPS, {})
    client = create_app(disabled, redis=redis, store=store, adapters=build_adapters(disabled)).test_client()
    resp = client.post("/webhooks/alixpay", data=json.dumps(ipn(keys)), content_type="application/json")
    assert resp.status_code == 404
    assert resp.get_json()["error"] == "provider alixpay is not configured"
    resp = client.post("/webhooks/nosuch", data="{}", content_type="application/json")
    assert resp.status_code == 404 and resp.get_json()["error"] == "provider nosuch is not configured"
    store.engine.dispose()


def test_redis_down_is_503_and_nothing_is_lost_silently(settings: Settings, keys: Keys) -> None:
    dead = connect("redis://127.0.0.1:1/0")  # what the web process builds, on a dead port
    store = Store(make_engine(settings.database_url), STATUS_MAPS, {})
    client = create_app(settings, redis=dead, store=store, adapters=build_adapters(settings)).test_client()
    started = time.monotonic()
    resp = client.post("/webhooks/alixpay", data=json.dumps(ipn(keys)), content_type="application/json")
    assert time.monotonic() - started < 2.0  # the provider is told to retry promptly
    assert resp.status_code == 503
    assert resp.get_json()["code"] == "queue_unavailable"
    assert resp.headers["Retry-After"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["database"] == "ok"
    store.engine.dispose()


def test_bad_signature_queues_one_rate_limited_healing_poll(client, redis: Redis, keys: Keys) -> None:
    for _ in range(3):
        assert post(client, ipn(keys, secret="wrong")).status_code == 401
    heals = jobs_in(redis, POLLS)
    assert [(j.func_name, j.args) for j in heals] == [(HEAL_JOB, ["alixpay", "ord-1"])]
    assert queued_callbacks(redis) == [] and jobs_in(redis, EVENTS) == []


def test_health_endpoints(client) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"redis": "ok", "database": "ok", "schema": "ok"}


def test_numbers_rendered_as_javascript_does(client, redis: Redis, keys: Keys) -> None:
    body = ipn(keys, fiatAmount=150000)  # signed over "150000"
    raw = json.dumps(body).replace('"fiatAmount": 150000', '"fiatAmount": 150000.0')
    assert "150000.0" in raw
    assert post(client, raw).status_code == 200
    (event,) = queued_callbacks(redis)
    assert event.fiat_amount == "150000"


def test_the_events_secret_is_never_in_the_answer(client, keys: Keys) -> None:
    resp = post(client, ipn(keys, secret="wrong"))
    assert SECRET not in resp.get_data(as_text=True)
    assert WEBHOOK_SECRET not in resp.get_data(as_text=True)


# ------------------------------------------------------------------ the endpoint in front of Flask


def test_other_methods_on_a_callback_path_are_405_in_json_uncounted(client, app, redis: Redis) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        resp = client.open("/webhooks/alixpay", method=method, data=b"{}", content_type="application/json")
        assert resp.status_code == 405, method
        assert resp.get_json()["code"] == "method_not_allowed"
    head = client.head("/webhooks/alixpay")
    assert head.status_code == 405 and head.data == b"" and int(head.headers["Content-Length"]) > 0
    assert queued_callbacks(redis) == []
    assert app.extensions["rampwatch"].metrics.pending() == {}  # a 405 is no callback


def test_paths_beside_the_callback_path_are_flasks_404(client, redis: Redis, keys: Keys) -> None:
    for path in ("/webhooks/", "/webhooks/alixpay/", "/webhooks/alixpay/extra", "/webhooks//alixpay"):
        resp = client.post(path, data=json.dumps(ipn(keys)), content_type="application/json")
        assert resp.status_code == 404, path
        assert resp.get_json()["code"] == "not_found", path
    assert queued_callbacks(redis) == []


def test_every_callback_answer_names_its_request(client, keys: Keys) -> None:
    body = json.dumps(ipn(keys))
    given = client.post(
        "/webhooks/alixpay",
        data=body,
        content_type="application/json",
        headers={"X-Request-ID": "req-ipn-0001"},
    )
    assert given.status_code == 200 and given.headers["X-Request-ID"] == "req-ipn-0001"
    assert given.get_json() == {"status": "accepted"} and given.content_type == "application/json"
    made = client.post(
        "/webhooks/alixpay", data=b"{", content_type="application/json", headers={"X-Request-ID": "x y"}
    )
    assert made.status_code == 400 and len(made.headers["X-Request-ID"]) == 32
    assert client.post("/webhooks/nope", data=body, content_type="application/json").headers["X-Request-ID"]


def test_a_bug_in_the_callback_path_is_a_500_in_json_with_its_traceback_logged(
    settings: Settings, redis: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    adapters = build_adapters(settings)
    broken = type(adapters["alixpay"])

    class Broken(broken):  # type: ignore[misc, valid-type]
        def parse_callback(self, *args, **kwargs):
            raise KeyError("a bug")

    adapters["alixpay"] = Broken(settings.providers["alixpay"])
    store = Store(make_engine(settings.database_url), STATUS_MAPS, {})
    app = create_app(settings, redis=redis, store=store, adapters=adapters)
    with caplog.at_level("ERROR", logger="rampwatch.receiver"):
        resp = app.test_client().post(
            "/webhooks/alixpay", data=json.dumps(ipn(keys)), content_type="application/json"
        )
    assert resp.status_code == 500
    assert resp.get_json()["code"] == "internal_server_error"
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)
    assert queued_callbacks(redis) == []
    assert app.extensions["rampwatch"].metrics.pending() == {
        ("rampwatch_callbacks", "alixpay|internal_server_error"): 1
    }
    store.engine.dispose()


def test_a_slug_that_is_not_utf8_is_a_404_not_a_traceback(app, redis: Redis) -> None:
    """PEP 3333 has PATH_INFO carry the path's bytes as latin-1: bytes that are not UTF-8
    (or a NUL) are a slug that names no provider."""
    import io

    for path in ("/webhooks/\xff\xfe", "/webhooks/\xe2\x82", "/webhooks/\x00", "/webhooks/%00"):
        seen: list[str] = []
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SERVER_NAME": "x",
            "SERVER_PORT": "80",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": "2",
            "wsgi.input": io.BytesIO(b"{}"),
            "wsgi.url_scheme": "http",
        }
        body = b"".join(app(environ, lambda status, headers, exc_info=None, seen=seen: seen.append(status)))
        assert [s.split()[0] for s in seen] == ["404"], path
        assert json.loads(body)["code"] == "provider_disabled", path
    assert queued_callbacks(redis) == []
