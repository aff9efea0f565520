"""Error reporting for real: sentry-sdk posts to a loopback server standing in for Sentry's
ingest, from a Flask route and from an RQ job run by a real worker; what arrives has
the error and none of the personal data, the bearer token or the signature header."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import sentry_sdk
from conftest import Keys, alix_settings
from recorders import WsgiLoopback
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from werkzeug.wrappers import Request, Response

from config import Settings
from config.errors import init_error_reporting, scrub_event
from orders.providers import build_adapters
from receiver import create_app
from workers.queue import EVENTS
from workers.services import build_services
from workers.worker import make_worker

ACCOUNT = "9988776655443"
EMAIL = "ada.obi@example.com"
PHONE = "+2348099887766"
OPS_TOKEN = "ops-token-0123456789abcdef"
SIGNATURE = "sig-secret-value-0001"
SECRETS = (ACCOUNT, EMAIL, PHONE, OPS_TOKEN, SIGNATURE, "ada.obi%40example.com")


class Ingest:
    """Sentry's ingest, as far as the SDK can tell: records each envelope it is sent."""

    def __init__(self) -> None:
        self.envelopes: list[str] = []
        self.server = WsgiLoopback(self._app)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server.port}/1"

    def _app(self, environ: dict, start_response: object) -> object:
        request = Request(environ)
        data = request.get_data()
        encoding = request.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            data = gzip.decompress(data)
        elif encoding == "br":
            import brotli

            data = brotli.decompress(data)
        self.envelopes.append(data.decode("utf-8", "replace"))
        return Response('{"id": "0"}', content_type="application/json")(environ, start_response)

    def wait_for(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sentry_sdk.flush(timeout=2)
            for envelope in self.envelopes:
                if needle in envelope:
                    return envelope
            time.sleep(0.05)
        raise AssertionError(f"no envelope with {needle!r} arrived: {self.envelopes!r}")


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    server = Ingest()
    yield server
    sentry_sdk.flush(timeout=2)
    sentry_sdk.init()  # no DSN: reporting off for the tests that follow
    server.server.close()


def _settings(database_url: str, redis: Redis, dsn: str) -> Settings:
    port = redis.connection_pool.connection_kwargs["port"]
    return Settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        ops_token=OPS_TOKEN,
        sentry_dsn=dsn,
        sentry_environment="ci",
    )


def test_without_a_dsn_nothing_is_turned_on(database_url: str, redis: Redis) -> None:
    assert init_error_reporting(_settings(database_url, redis, ""), "web") is False


def test_a_route_error_arrives_scrubbed(ingest: Ingest, database_url: str, redis: Redis) -> None:
    app = create_app(_settings(database_url, redis, ingest.dsn), redis=redis)

    @app.post("/boom")
    def boom() -> str:
        raise RuntimeError(f"could not pay {ACCOUNT} for {EMAIL} ({PHONE})")

    resp = app.test_client().post(
        f"/boom?email={EMAIL}",
        data=f'{{"bankAccountNumber": "{ACCOUNT}", "phone": "{PHONE}"}}',
        headers={
            "Authorization": f"Bearer {OPS_TOKEN}",
            "X-Callback-Signature": SIGNATURE,
            "Content-Type": "application/json",
            "X-Request-ID": "req-boom-0001",
        },
    )
    assert resp.status_code == 500
    envelope = ingest.wait_for("could not pay")
    assert "RuntimeError" in envelope and '"environment":"ci"' in envelope.replace(" ", "")
    assert "****5443" in envelope and "req-boom-0001" in envelope  # masked, and the request id kept
    for secret in SECRETS:
        assert secret not in envelope, secret
    app.extensions["rampwatch"].store.engine.dispose()


def test_a_failing_job_arrives_scrubbed(ingest: Ingest, database_url: str, redis: Redis) -> None:
    settings = _settings(database_url, redis, ingest.dsn)
    assert init_error_reporting(settings, "worker") is True
    runtime = build_services(settings, redis=redis, adapters={})
    token = runtime.install()
    try:
        # A payload that cannot be read: a DataError, failed at once (no retry), reported.
        Queue(EVENTS, connection=redis, serializer=JSONSerializer).enqueue(
            "workers.jobs.apply_event", {"v": 2, EMAIL: PHONE, ACCOUNT: "x"}, job_id="broken-sentry-1"
        )
        make_worker(runtime).work(burst=True)
        envelope = ingest.wait_for("BadEventPayload")
    finally:
        token.var.reset(token)
        runtime.store.engine.dispose()
    assert "broken-sentry-1" in envelope and '"component":"worker"' in envelope.replace(" ", "")
    for secret in SECRETS:
        assert secret not in envelope, secret


def test_scrub_event_drops_headers_bodies_and_job_arguments() -> None:
    event = {
        "message": f"mail {EMAIL}",
        "request": {
            "url": f"http://x/webhooks/alixpay?phone={PHONE}",
            "headers": {
                "Authorization": f"Bearer {OPS_TOKEN}",
                "webhook-signature": SIGNATURE,
                "User-Agent": "ua",
            },
            "data": {"bankAccountNumber": ACCOUNT},
            "cookies": {"s": "1"},
        },
        "exception": {
            "values": [{"value": f"acct {ACCOUNT}", "stacktrace": {"frames": [{"vars": {"b": EMAIL}}]}}]
        },
        "extra": {"rq-job": {"job_id": "j-1", "args": [{"email": "name-only"}], "kwargs": {}}},
        "breadcrumbs": {"values": [{"message": f"phone {PHONE}", "data": {"to": EMAIL}}]},
        "user": {"ip_address": "203.0.113.9"},
    }
    scrubbed = scrub_event(event)
    flat = repr(scrubbed)
    for secret in (*SECRETS, "name-only", "203.0.113.9"):
        assert secret not in flat, secret
    assert scrubbed["request"]["headers"] == {"User-Agent": "ua"}
    assert scrubbed["extra"]["rq-job"] == {"job_id": "j-1"}


def test_a_callback_bug_arrives_scrubbed_and_tagged(
    ingest: Ingest, database_url: str, redis: Redis, keys: Keys
) -> None:
    """The callback endpoint is plain WSGI (no Flask integration sees it): it reports itself."""
    settings = replace(
        _settings(database_url, redis, ingest.dsn),
        providers={"alixpay": alix_settings(keys, "http://127.0.0.1:9")},
    )
    adapters = build_adapters(settings)

    class Broken(type(adapters["alixpay"])):  # type: ignore[misc]
        def parse_callback(self, *args, **kwargs):
            raise RuntimeError(f"could not pay {ACCOUNT} for {EMAIL} ({PHONE})")

    adapters["alixpay"] = Broken(settings.providers["alixpay"])
    app = create_app(settings, redis=redis, adapters=adapters)
    resp = app.test_client().post(
        "/webhooks/alixpay",
        data=f'{{"bankAccountNumber": "{ACCOUNT}", "phone": "{PHONE}"}}',
        headers={"Content-Type": "application/json", "X-Request-ID": "req-ipn-boom-01"},
    )
    assert resp.status_code == 500 and resp.get_json()["code"] == "internal_server_error"
    envelope = ingest.wait_for("could not pay")
    assert "RuntimeError" in envelope and "req-ipn-boom-01" in envelope and "alixpay" in envelope
    assert "****5443" in envelope
    for secret in SECRETS:
        assert secret not in envelope, secret
    app.extensions["rampwatch"].store.engine.dispose()
