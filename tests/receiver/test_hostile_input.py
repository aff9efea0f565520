"""Every hostile input gets its documented answer: a 4xx with a JSON reason, never a
5xx, never a traceback in the logs, nothing queued for apply.

One line per case a hostile tester found (500s on all three webhooks and on the
API's create body), each named after what it sends: JSON nested far deeper than
``MAX_DEPTH``, integers beyond every double, lone surrogates and NUL characters in
signed strings, raw control characters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    FUSPAY_PUBLIC,
    FUSPAY_SECRET,
    WEBHOOK_SECRET,
    Keys,
    alix_settings,
    changelly_settings,
    fuspay_settings,
    queued_callbacks,
)
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from scenarios import alixpay_sell
from werkzeug.test import TestResponse

from config import Settings
from orders.db import make_engine
from orders.providers import STATUS_MAPS, build_adapters
from orders.providers.alixpay import signing as alix_signing
from orders.providers.changelly import signing as changelly_signing
from orders.providers.fuspay import signing as fuspay_signing
from orders.providers.jsformat import js_stringify
from orders.providers.payload import MAX_DEPTH
from orders.store import Store
from receiver import create_app
from workers.queue import POLLS

TOKEN = "hostile-token-0123456789"
JSON = "application/json"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def alix_ipn(keys: Keys, **fields: object) -> dict:
    """A validly signed IPN; ``fields`` then replace signed or unsigned fields."""
    body = {"externalOrderId": "ord-1", "type": "sell", "fiatAmount": 100000, "status": "AWAITING_PAYMENT"}
    body["signature"] = alix_signing.sign(
        alix_signing.response_fields(body), WEBHOOK_SECRET, keys.alix.private
    )
    body.update(fields)
    return body


def signed_ipn(keys: Keys, **fields: object) -> str:
    """The signature AliX would give an IPN with these signed fields."""
    body = {
        "externalOrderId": "ord-1",
        "type": "sell",
        "fiatAmount": 100000,
        "status": "AWAITING_PAYMENT",
        **fields,
    }
    return alix_signing.sign(alix_signing.response_fields(body), WEBHOOK_SECRET, keys.alix.private)


def fuspay_event(**fields: object) -> dict:
    body = {
        "event_name": "event.sell.init",
        "partner_order_id": "ord-1",
        "fuspay_order_ref": "ord-1_p176517",
        "fiat_amount_to_receive": 1000,
        "chain": "usdt-trc20",
    }
    body["signature"] = fuspay_signing.sign(body, FUSPAY_PUBLIC + FUSPAY_SECRET, "hmac-sha512")
    body.update(fields)
    return body


def with_raw(body: dict, name: str, raw_json: str) -> bytes:
    """``body`` serialised with ``name``'s value written as ``raw_json`` (what json.dumps cannot write)."""
    text = json.dumps({**body, name: "__RAW__"})
    return text.replace('"__RAW__"', raw_json).encode()


# (provider, body, extra headers, status, code); keys are passed in at test time.
Case = Callable[[Keys], tuple[str, bytes, dict[str, str], int, str]]


def changelly_headers(keys: Keys, order_id: str = "chg-1") -> dict[str, str]:
    return {
        changelly_signing.CALLBACK_SIGNATURE_HEADER: changelly_signing.sign_callback(
            order_id, keys.changelly_callback.private
        )
    }


WEBHOOK_CASES: dict[str, Case] = {
    "alixpay-nested-1000-deep": lambda k: (
        "alixpay",
        with_raw(alix_ipn(k), "extra", nested(1000)),
        {},
        400,
        "invalid_payload",
    ),
    "alixpay-nested-just-over-the-limit": lambda k: (
        "alixpay",
        with_raw(alix_ipn(k), "extra", nested(MAX_DEPTH)),  # the body itself is one level
        {},
        400,
        "invalid_payload",
    ),
    "alixpay-fiatAmount-10e309": lambda k: (
        "alixpay",
        with_raw(alix_ipn(k), "fiatAmount", "1" + "0" * 309),
        {},
        400,
        "invalid_payload",
    ),
    "alixpay-fiatAmount-1e400-float": lambda k: (
        "alixpay",
        with_raw(alix_ipn(k), "fiatAmount", "1e400"),
        {},
        400,
        "invalid_payload",
    ),
    # Signed as AliX would sign it (String(1e300) is "1e+300"): finite, but 301 digits.
    "alixpay-signed-fiatAmount-1e300": lambda k: (
        "alixpay",
        json.dumps(
            alix_ipn(k, fiatAmount=1e300, signature=None) | {"signature": signed_ipn(k, fiatAmount=1e300)}
        ).encode(),
        {},
        400,
        "invalid_payload",
    ),
    "alixpay-lone-surrogate-in-status": lambda k: (
        "alixpay",
        json.dumps(alix_ipn(k, status="\ud800")).encode(),
        {},
        400,
        "invalid_payload",
    ),
    "alixpay-lone-surrogate-in-order-id": lambda k: (
        "alixpay",
        json.dumps(alix_ipn(k, externalOrderId="a\udfffb")).encode(),
        {},
        400,
        "invalid_payload",
    ),
    "alixpay-nul-in-order-id": lambda k: (
        "alixpay",
        json.dumps(alix_ipn(k, externalOrderId="a\u0000b")).encode(),
        {},
        400,
        "invalid_payload",
    ),
    "alixpay-raw-control-character": lambda k: (
        "alixpay",
        json.dumps(alix_ipn(k)).replace("ord-1", "ord\x01-1").encode(),
        {},
        400,
        "invalid_payload",
    ),
    "fuspay-1.1KB-nested-body": lambda k: (
        "fuspay",
        with_raw(fuspay_event(), "meta_data", nested(520)),
        {},
        400,
        "invalid_payload",
    ),
    "fuspay-integer-10e309": lambda k: (
        "fuspay",
        with_raw(fuspay_event(), "crypto_amount_to_sell", "1" + "0" * 309),
        {},
        401,
        "invalid_signature",
    ),
    "fuspay-lone-surrogate-in-name": lambda k: (
        "fuspay",
        json.dumps(fuspay_event(first_name="\ud800")).encode(),
        {},
        400,
        "invalid_payload",
    ),
    "fuspay-nul-in-order-id": lambda k: (
        "fuspay",
        json.dumps(fuspay_event(partner_order_id="x\u0000")).encode(),
        {},
        400,
        "invalid_payload",
    ),
    "changelly-nested-1000-deep": lambda k: (
        "changelly",
        with_raw({"orderId": "chg-1"}, "extra", nested(1000)),
        changelly_headers(k),
        400,
        "invalid_payload",
    ),
    "changelly-lone-surrogate-in-order-id": lambda k: (
        "changelly",
        json.dumps({"orderId": "chg\ud800"}).encode(),
        changelly_headers(k),
        400,
        "invalid_payload",
    ),
    "changelly-nul-in-order-id": lambda k: (
        "changelly",
        json.dumps({"orderId": "chg\u00001"}).encode(),
        changelly_headers(k),
        400,
        "invalid_payload",
    ),
}

SELL = alixpay_sell("api-hostile-1")

API_CASES: dict[str, bytes] = {
    "api-create-nested-1000-deep": with_raw(SELL, "requestKycFields", nested(1000)),
    "api-create-lone-surrogate": json.dumps({**SELL, "bankAccountName": "\ud800"}).encode(),
    "api-create-nul-in-order-id": json.dumps({**SELL, "externalOrderId": "a\u0000b"}).encode(),
    "api-create-fiatAmount-10e309": with_raw(SELL, "fiatAmount", "1" + "0" * 309),
    "api-create-fiatAmount-1e300": json.dumps({**SELL, "fiatAmount": 1e300}).encode(),
    "api-create-fiatCurrency-40-characters": json.dumps({**SELL, "fiatCurrency": "X" * 40}).encode(),
}


def settings_for(database_url: str, redis: Redis, keys: Keys) -> Settings:
    port = redis.connection_pool.connection_kwargs["port"]
    dead = "http://127.0.0.1:9"  # none of these inputs may reach a provider
    return Settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        api_token=TOKEN,
        providers={
            "alixpay": alix_settings(keys, dead),
            "fuspay": fuspay_settings(dead),
            "changelly": changelly_settings(keys, dead),
        },
    )


def client_on(database_url: str, redis: Redis, keys: Keys) -> Iterator[FlaskClient]:
    settings = settings_for(database_url, redis, keys)
    store = Store(make_engine(database_url), STATUS_MAPS, {})
    # Not in testing mode: an exception becomes the 500 a provider would see.
    yield create_app(settings, redis=redis, store=store, adapters=build_adapters(settings)).test_client()
    store.engine.dispose()


@pytest.fixture
def webhook_client(tmp_path: Path, redis: Redis, keys: Keys) -> Iterator[FlaskClient]:
    yield from client_on(f"sqlite:///{tmp_path / 'unused.sqlite3'}", redis, keys)  # webhooks need no database


@pytest.fixture
def api_client(database_url: str, redis: Redis, keys: Keys) -> Iterator[FlaskClient]:
    yield from client_on(database_url, redis, keys)


def jobs(redis: Redis, name: str) -> list[str]:
    return Queue(name, connection=redis, serializer=JSONSerializer).job_ids


def assert_refused_quietly(
    resp: TestResponse, status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert resp.status_code == status, resp.get_data(as_text=True)[:300]
    assert resp.mimetype == JSON
    assert resp.get_json()["code"] == code and resp.get_json()["error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text[:2000]
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("case", list(WEBHOOK_CASES), ids=list(WEBHOOK_CASES))
def test_hostile_callback(
    case: str, webhook_client: FlaskClient, redis: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider, body, headers, status, code = WEBHOOK_CASES[case](keys)
    resp = webhook_client.post(f"/webhooks/{provider}", data=body, content_type=JSON, headers=headers)
    assert_refused_quietly(resp, status, code, caplog)
    assert queued_callbacks(redis) == []
    if status == 400:  # unreadable: not even a healing poll
        assert jobs(redis, POLLS) == []


@pytest.mark.parametrize("case", list(API_CASES), ids=list(API_CASES))
def test_hostile_create_body(
    case: str, api_client: FlaskClient, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    resp = api_client.post(
        "/api/orders/alixpay",
        data=API_CASES[case],
        content_type=JSON,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert_refused_quietly(resp, 400, "invalid_payload", caplog)
    # Nothing was recorded: the order is unknown.
    view = api_client.get("/api/orders/alixpay/api-hostile-1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert view.status_code == 404
    assert queued_callbacks(redis) == [] and jobs(redis, POLLS) == []


def test_the_depth_limit_is_exact(webhook_client: FlaskClient, keys: Keys) -> None:
    """MAX_DEPTH levels are read (and fail only on the signature); one more is refused."""
    at_limit = with_raw(alix_ipn(keys), "extra", nested(MAX_DEPTH - 1))
    resp = webhook_client.post("/webhooks/alixpay", data=at_limit, content_type=JSON)
    assert resp.status_code == 200, resp.get_json()  # the extra field is not signed: accepted
    over = with_raw(alix_ipn(keys), "extra", nested(MAX_DEPTH))
    resp = webhook_client.post("/webhooks/alixpay", data=over, content_type=JSON)
    assert resp.status_code == 400 and str(MAX_DEPTH) in resp.get_json()["error"]


def test_fuspay_signs_huge_integers_as_javascript_does(webhook_client: FlaskClient, redis: Redis) -> None:
    """JSON.stringify writes an integer beyond every double as null: a body Fuspay signed
    that way verifies (and is then refused for its amount, which is not finite)."""
    body = fuspay_event()
    del body["signature"]
    body["meta_data"] = {"n": 10**309}
    signature = fuspay_signing.sign(body, FUSPAY_PUBLIC + FUSPAY_SECRET, "hmac-sha512")
    assert js_stringify(body).endswith('"meta_data":{"n":null}}')
    raw = json.dumps({**body, "signature": signature}).encode()
    resp = webhook_client.post("/webhooks/fuspay", data=raw, content_type=JSON)
    assert resp.status_code == 200, resp.get_json()
    assert len(queued_callbacks(redis)) == 1


def test_a_signed_amount_is_read_as_the_signature_covers_it(
    webhook_client: FlaskClient, redis: Redis, keys: Keys
) -> None:
    """AliX signs String(fiatAmount): 9007199254740993 is the double 9007199254740992 in
    JavaScript, so both bodies verify with one signature. The amount read is the one
    signed, never the other integer a body may spell."""
    body = alix_ipn(keys, fiatAmount=9007199254740992)
    body["signature"] = alix_signing.sign(
        alix_signing.response_fields(body), WEBHOOK_SECRET, keys.alix.private
    )
    raw = json.dumps(body).replace("9007199254740992", "9007199254740993").encode()
    resp = webhook_client.post("/webhooks/alixpay", data=raw, content_type=JSON)
    assert resp.status_code == 200, resp.get_json()
    (event,) = queued_callbacks(redis)
    assert event.fiat_amount == "9007199254740992"
