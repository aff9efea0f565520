"""Unverified traffic is rate-limited per provider and client address, an optional IP
allowlist per provider, and the client address read through a configured number of
trusted proxies only. On a real Redis; the client address is set the way a WSGI
server sets it (``REMOTE_ADDR``), the proxies' header as they write it."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import FUSPAY_PUBLIC, FUSPAY_SECRET, WEBHOOK_SECRET, Keys, alix_settings, fuspay_settings
from flask.testing import FlaskClient
from redis import Redis
from werkzeug.test import TestResponse

from config import ConfigError, Settings
from orders.db import make_engine
from orders.providers import STATUS_MAPS, build_adapters, load_settings
from orders.providers.alixpay import signing
from orders.providers.fuspay import signing as fuspay_signing
from orders.store import Store
from receiver import create_app
from receiver.errors import RateLimited
from receiver.limits import CLEAR_FOR, UnverifiedLimiter
from workers.queue import connect
from workers.stream import STREAM

PEER = "192.0.2.10"  # what the WSGI server saw: the client, or the last proxy


def ipn(keys: Keys, order_id: str = "ord-1", secret: str = WEBHOOK_SECRET) -> bytes:
    body = {"externalOrderId": order_id, "type": "sell", "fiatAmount": 100000, "status": "AWAITING_PAYMENT"}
    body["signature"] = signing.sign(signing.response_fields(body), secret, keys.alix.private)
    return json.dumps(body).encode()


def fuspay_event(order_id: str = "f-1") -> bytes:
    body = {"event_name": "event.sell.init", "partner_order_id": order_id}
    body["signature"] = fuspay_signing.sign(body, FUSPAY_PUBLIC + FUSPAY_SECRET, "hmac-sha512")
    return json.dumps(body).encode()


@pytest.fixture
def base_settings(tmp_path: Path, redis: Redis, keys: Keys) -> Settings:
    port = redis.connection_pool.connection_kwargs["port"]
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'unused.sqlite3'}",  # webhooks need no database
        redis_url=f"redis://127.0.0.1:{port}/0",
        providers={
            "alixpay": alix_settings(keys, "http://127.0.0.1:9"),
            "fuspay": fuspay_settings("http://127.0.0.1:9"),
        },
        unverified_limit=3,
        unverified_window=60,
    )


@pytest.fixture
def client_for(redis: Redis) -> Iterator[Callable[[Settings], FlaskClient]]:
    stores: list[Store] = []

    def make(settings: Settings) -> FlaskClient:
        stores.append(Store(make_engine(settings.database_url), STATUS_MAPS, {}))
        app = create_app(settings, redis=redis, store=stores[-1], adapters=build_adapters(settings))
        return app.test_client()

    yield make
    for store in stores:
        store.engine.dispose()


@pytest.fixture
def client(base_settings: Settings, client_for: Callable[[Settings], FlaskClient]) -> FlaskClient:
    return client_for(base_settings)


def post(client: FlaskClient, provider: str, body: bytes, addr: str = PEER, **headers: str) -> TestResponse:
    return client.post(
        f"/webhooks/{provider}",
        data=body,
        content_type="application/json",
        headers=headers,
        environ_base={"REMOTE_ADDR": addr},
    )


def queued(redis: Redis) -> int:
    """Callbacks queued for apply: entries of the callback stream."""
    return int(redis.xlen(STREAM))


# ------------------------------------------------------------------ rate limit


def test_refusals_past_the_limit_are_429_for_the_rest_of_the_window(
    client: FlaskClient, redis: Redis, keys: Keys
) -> None:
    forged = ipn(keys, secret="not-the-secret")
    assert [post(client, "alixpay", forged).status_code for _ in range(3)] == [401, 401, 401]
    throttled = post(client, "alixpay", forged)
    assert throttled.status_code == 429
    assert throttled.get_json()["code"] == "too_many_requests" and "retry in" in throttled.get_json()["error"]
    assert 0 < int(throttled.headers["Retry-After"]) <= 60
    # Throttled before any verification, a genuine body from that address too.
    assert post(client, "alixpay", ipn(keys)).status_code == 429
    assert queued(redis) == 0
    # Per provider and per address: the others are not affected.
    assert post(client, "fuspay", fuspay_event()).status_code == 200
    assert post(client, "alixpay", ipn(keys), addr="192.0.2.11").status_code == 200
    assert queued(redis) == 2


def test_every_kind_of_refusal_counts_and_verified_callbacks_never_do(
    client: FlaskClient, redis: Redis, keys: Keys
) -> None:
    for n in range(10):
        assert post(client, "alixpay", ipn(keys, f"good-{n}")).status_code == 200
    assert post(client, "alixpay", b"{not json").status_code == 400
    assert post(client, "alixpay", b"[" * 100 + b"]" * 100).status_code == 400
    too_big = b'{"a": "' + b"x" * (64 * 1024) + b'"}'
    assert post(client, "alixpay", too_big).status_code == 413
    assert post(client, "alixpay", ipn(keys)).status_code == 429
    assert queued(redis) == 10


def test_unknown_providers_do_not_count(client: FlaskClient, keys: Keys) -> None:
    for _ in range(5):
        assert post(client, "nosuch", b"{}").status_code == 404
    assert post(client, "alixpay", ipn(keys)).status_code == 200


def test_with_redis_down_the_check_answers_503_like_the_enqueue(base_settings: Settings, keys: Keys) -> None:
    dead = connect("redis://127.0.0.1:1/0")
    store = Store(make_engine(base_settings.database_url), STATUS_MAPS, {})
    app = create_app(base_settings, redis=dead, store=store, adapters=build_adapters(base_settings))
    resp = post(app.test_client(), "alixpay", ipn(keys, secret="forged"))
    assert resp.status_code == 503 and resp.get_json()["code"] == "queue_unavailable"
    assert resp.headers["Retry-After"]
    store.engine.dispose()
    dead.close()


# ------------------------------------------------------------------ allowlist and proxies


def allowlisted(settings: Settings, proxies: int) -> Settings:
    alix = replace(settings.provider("alixpay"), allowed_ips=(ipaddress.ip_network("203.0.113.0/24"),))
    return replace(settings, providers={**settings.providers, "alixpay": alix}, trusted_proxies=proxies)


def test_the_allowlist_takes_the_address_one_trusted_proxy_saw(
    base_settings: Settings, client_for: Callable[[Settings], FlaskClient], redis: Redis, keys: Keys
) -> None:
    client = client_for(allowlisted(base_settings, proxies=1))
    # Heroku's router appends the address it saw: the last entry is the one to trust.
    ok = post(client, "alixpay", ipn(keys, "a"), **{"X-Forwarded-For": "198.51.100.7, 203.0.113.9"})
    assert ok.status_code == 200, ok.get_json()
    # Whatever a client writes further left is not believed.
    spoofed = post(client, "alixpay", ipn(keys, "b"), **{"X-Forwarded-For": "203.0.113.9, 198.51.100.7"})
    assert spoofed.status_code == 403 and spoofed.get_json()["code"] == "address_not_allowed"
    assert post(client, "alixpay", ipn(keys, "c")).status_code == 403  # no header: the peer
    # A provider without an allowlist takes any address.
    assert post(client, "fuspay", fuspay_event(), **{"X-Forwarded-For": "198.51.100.7"}).status_code == 200
    assert queued(redis) == 2


def test_without_trusted_proxies_the_forwarded_header_is_ignored(
    base_settings: Settings, client_for: Callable[[Settings], FlaskClient], keys: Keys
) -> None:
    client = client_for(allowlisted(base_settings, proxies=0))
    resp = post(client, "alixpay", ipn(keys), **{"X-Forwarded-For": "203.0.113.9"})
    assert resp.status_code == 403
    assert post(client, "alixpay", ipn(keys), addr="203.0.113.200").status_code == 200
    assert post(client, "alixpay", ipn(keys, "v6"), addr="::ffff:203.0.113.5").status_code == 200


def test_the_rate_limit_counts_the_address_behind_the_proxy(
    base_settings: Settings, client_for: Callable[[Settings], FlaskClient], keys: Keys
) -> None:
    client = client_for(replace(base_settings, trusted_proxies=1))
    forged = ipn(keys, secret="forged")
    for _ in range(3):
        assert post(client, "alixpay", forged, **{"X-Forwarded-For": "198.51.100.1"}).status_code == 401
    assert post(client, "alixpay", forged, **{"X-Forwarded-For": "198.51.100.1"}).status_code == 429
    # Same proxy (same peer), another client behind it: not throttled.
    assert post(client, "alixpay", ipn(keys), **{"X-Forwarded-For": "198.51.100.2"}).status_code == 200


# ------------------------------------------------------------------ settings


def test_the_settings_are_read_and_checked() -> None:
    base = {
        "RAMPWATCH_TRUSTED_PROXIES": "1",
        "RAMPWATCH_UNVERIFIED_LIMIT": "10",
        "RAMPWATCH_UNVERIFIED_WINDOW": "2m",
    }
    settings = load_settings(base, Path("/nonexistent"))
    assert (settings.trusted_proxies, settings.unverified_limit, settings.unverified_window) == (1, 10, 120)
    defaults = load_settings({}, Path("/nonexistent"))
    assert (defaults.trusted_proxies, defaults.unverified_limit, defaults.unverified_window) == (0, 30, 60)
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "RAMPWATCH_TRUSTED_PROXIES": "-1",
                "RAMPWATCH_UNVERIFIED_LIMIT": "0",
                "FUSPAY_PARTNER_ID": "p1",
                "FUSPAY_PUBLIC_KEY": "pk",
                "FUSPAY_SECRET_KEY": "sk",
                "FUSPAY_BASE_URL": "https://example.com",
                "FUSPAY_ALLOWED_IPS": "203.0.113.0/24, 10.0.0.1/8, not-an-ip",
            },
            Path("/nonexistent"),
        )
    problems = "\n".join(info.value.problems)
    assert "RAMPWATCH_TRUSTED_PROXIES" in problems and "RAMPWATCH_UNVERIFIED_LIMIT" in problems
    assert "FUSPAY_ALLOWED_IPS: '10.0.0.1/8', 'not-an-ip'" in problems


def test_an_allowlist_is_read_into_networks() -> None:
    env = {
        "FUSPAY_PARTNER_ID": "p1",
        "FUSPAY_PUBLIC_KEY": "pk",
        "FUSPAY_SECRET_KEY": "sk",
        "FUSPAY_BASE_URL": "https://example.com",
        "FUSPAY_ALLOWED_IPS": "203.0.113.7, 198.51.100.0/24,2001:db8::/32",
    }
    fuspay = load_settings(env, Path("/nonexistent")).provider("fuspay")
    assert fuspay.allowed_ips == (
        ipaddress.ip_network("203.0.113.7/32"),
        ipaddress.ip_network("198.51.100.0/24"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    del env["FUSPAY_ALLOWED_IPS"]
    assert load_settings(env, Path("/nonexistent")).provider("fuspay").allowed_ips == ()


def _gets(redis: Redis) -> int:
    return int(redis.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def test_a_client_under_its_budget_costs_one_check_a_second(redis: Redis) -> None:
    """Good callbacks from a provider cost no budget read for a second after one said
    it was under budget; a refusal counted elsewhere is seen once that second is over,
    one counted by this process at once."""
    now = [100.0]
    limiter = UnverifiedLimiter(redis, limit=2, window=60, clock=lambda: now[0])
    before = _gets(redis)
    for _ in range(6):
        limiter.check("alixpay", "203.0.113.7")
    assert _gets(redis) - before == 1
    other_process = UnverifiedLimiter(redis, limit=2, window=60)
    for _ in range(2):
        other_process.count("alixpay", "203.0.113.7")
    limiter.check("alixpay", "203.0.113.7")  # still within the second it remembers
    now[0] += CLEAR_FOR + 0.01
    with pytest.raises(RateLimited):
        limiter.check("alixpay", "203.0.113.7")
    # This process's own refusal is seen at once.
    limiter.check("alixpay", "198.51.100.9")
    limiter.count("alixpay", "198.51.100.9")
    limiter.count("alixpay", "198.51.100.9")
    with pytest.raises(RateLimited):
        limiter.check("alixpay", "198.51.100.9")
