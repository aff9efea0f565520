"""The operator console through Flask's test client: log-in and its cookie, CSRF, the pages
(filters, keyset pages, stuck orders, an order's timeline with masked raw bodies, failed
work, activity) and the repairs (reconcile, resolve, requeue, redeliver), on SQLite and
PostgreSQL, a private Redis and the AliX sandbox."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Keys
from consolekit import (
    OPS_TOKEN,
    PARTNER_TOKEN,
    PERSONAL_ACCOUNT,
    PERSONAL_EMAIL,
    PERSONAL_NAME,
    alix_callback,
    console_app,
    console_services,
    console_settings,
    csrf_of,
    log_in,
    logged_in,
    post_form,
)
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from scenarios import alixpay_sell
from sqlalchemy import update

from devkit.alixpay.sandbox import AlixSandbox
from orders.events import utcnow
from orders.models import Anomaly, Notification, Order
from orders.store import Store
from receiver.console import session
from workers.queue import Queues
from workers.services import Services
from workers.worker import make_worker

PAGES = [
    "/console/orders",
    "/console/stuck",
    "/console/failed",
    "/console/activity",
    "/console/orders/alixpay/x",
]


@pytest.fixture
def runtime(database_url: str, redis: Redis, keys: Keys, sandbox: AlixSandbox) -> Iterator[Services]:
    with console_services(database_url, redis, keys, sandbox.url) as services:
        yield services


@pytest.fixture
def app(runtime: Services, redis: Redis) -> Flask:
    return console_app(runtime.settings, redis, runtime.store, reconcile_wait=10.0)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return logged_in(app)


def seed(store: Store, external_order_id: str, **columns: Any) -> int:
    now = datetime.now(UTC)
    values: dict[str, Any] = dict(
        provider="alixpay",
        external_order_id=external_order_id,
        status="AWAITING_PAYMENT",
        rank=1,
        version=1,
        details={},
        poll_attempts=0,
        created_at=now,
        updated_at=now,
    )
    values.update(columns)
    with store.sessions.begin() as s:
        order = Order(**values)
        s.add(order)
        s.flush()
        return order.id


def anomaly(store: Store, order_id: int, kind: str = "conflict") -> int:
    with store.sessions.begin() as s:
        row = Anomaly(order_id=order_id, kind=kind, detail='{"why": "test"}', created_at=datetime.now(UTC))
        s.add(row)
        s.flush()
        return row.id


# ------------------------------------------------------------------ access


def test_no_page_is_reachable_without_logging_in(app: Flask, runtime: Services) -> None:
    client = app.test_client()
    for page in PAGES:
        resp = client.get(page)
        assert resp.status_code == 302, page
        assert resp.headers["Location"].startswith("/console/login?next=")
    oid = seed(runtime.store, "a-1")
    aid = anomaly(runtime.store, oid)
    resp = client.post(f"/console/anomalies/{aid}/resolve", data={"comment": "x"})
    assert resp.status_code == 303 and resp.headers["Location"] == "/console/login"
    assert runtime.store.order_view("alixpay", "a-1").anomalies[0].resolved_at is None


def test_a_wrong_or_missing_token_is_refused(app: Flask) -> None:
    client = app.test_client()
    for token in ("", "not-the-token", PARTNER_TOKEN, OPS_TOKEN + "x", OPS_TOKEN[:-1]):
        resp = log_in(client, token)
        assert resp.status_code == 401, token
        assert "That is not the operator token." in resp.text
        assert session.SESSION_COOKIE not in resp.headers.get("Set-Cookie", "")
        assert client.get("/console/orders").status_code == 302


def test_refused_log_ins_are_throttled_per_address(
    database_url: str, redis: Redis, keys: Keys, sandbox: AlixSandbox, runtime: Services
) -> None:
    """Past RAMPWATCH_UNVERIFIED_LIMIT refused log-ins, an address gets 429 even with the
    right token until the window ends; another address is not affected."""
    settings = console_settings(database_url, redis, keys, sandbox.url, unverified_limit=3)
    app = console_app(settings, redis, runtime.store)
    guesser = app.test_client()
    for _ in range(3):
        assert log_in(guesser, "guess").status_code == 401
    refused = log_in(guesser, OPS_TOKEN)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "Too many refused log-ins" in refused.text
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "198.51.100.20"
    assert log_in(other).status_code == 303


def test_logging_in_sets_a_signed_strict_httponly_cookie_with_an_expiry(app: Flask) -> None:
    client = app.test_client()
    resp = log_in(client)
    assert resp.status_code == 303 and resp.headers["Location"] == "/console/orders"
    (cookie,) = [c for c in resp.headers.getlist("Set-Cookie") if c.startswith(session.SESSION_COOKIE + "=")]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert f"Max-Age={session.SESSION_AGE}" in cookie and "Expires=" in cookie
    assert "Secure" not in cookie  # plain http (tests); over https it is Secure:
    assert OPS_TOKEN not in cookie
    secure = app.test_client()
    page = secure.get("/console/login", base_url="https://console.example")
    resp = secure.post(
        "/console/login",
        data={"token": OPS_TOKEN, "csrf_token": csrf_of(page.text)},
        base_url="https://console.example",
    )
    assert all("Secure" in c for c in resp.headers.getlist("Set-Cookie"))
    behind = dataclasses.replace(app.extensions["rampwatch"].settings, trusted_proxies=1)
    app.extensions["rampwatch"].settings = behind  # TLS ended by a proxy we trust (Heroku's router)
    resp = app.test_client().get("/console/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in resp.headers["Set-Cookie"]
    assert client.get("/console/orders").status_code == 200


def test_log_in_goes_back_to_the_page_asked_for_and_nowhere_else(app: Flask) -> None:
    client = app.test_client()
    for asked, lands in [
        ("/console/stuck", "/console/stuck"),
        ("https://evil.example/", "/console/orders"),
        ("//evil.example/console/", "/console/orders"),
    ]:
        page = client.get(f"/console/login?next={asked}")
        resp = client.post(
            "/console/login", data={"token": OPS_TOKEN, "next": asked, "csrf_token": csrf_of(page.text)}
        )
        assert resp.headers["Location"] == lands
        client.delete_cookie(session.SESSION_COOKIE, path="/console")


def test_a_forged_or_foreign_cookie_is_refused(app: Flask, client: FlaskClient) -> None:
    good = client.get_cookie(session.SESSION_COOKIE, path="/console").value
    assert client.get("/console/orders").status_code == 200
    client.set_cookie(
        session.SESSION_COOKIE, good[:-2] + ("AA" if not good.endswith("AA") else "BB"), path="/console"
    )
    assert client.get("/console/orders").status_code == 302
    services = app.extensions["rampwatch"]
    services.settings = dataclasses.replace(services.settings, ops_token="another-ops-token-0123456789")
    client.set_cookie(session.SESSION_COOKIE, good, path="/console")
    assert client.get("/console/orders").status_code == 302  # a rotated token voids it


def test_an_expired_cookie_is_refused(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/console/stuck").status_code == 200
    monkeypatch.setattr(session, "SESSION_AGE", -1)
    assert client.get("/console/stuck").status_code == 302


def test_log_out_ends_the_session(client: FlaskClient) -> None:
    resp = post_form(client, "/console/orders", "/console/logout")
    assert resp.status_code == 303 and resp.headers["Location"] == "/console/login"
    assert client.get("/console/orders").status_code == 302


def test_the_console_is_a_404_page_without_an_ops_token(
    database_url: str, redis: Redis, keys: Keys, sandbox: AlixSandbox, runtime: Services
) -> None:
    settings = console_settings(database_url, redis, keys, sandbox.url, ops_token=None)
    client = console_app(settings, redis, runtime.store).test_client()
    for page in ["/console/login", *PAGES]:
        resp = client.get(page)
        assert resp.status_code == 404 and "RAMPWATCH_OPS_TOKEN is not set" in resp.text
    assert client.post("/console/login", data={"token": ""}).status_code == 404


# ------------------------------------------------------------------ CSRF


def test_a_form_without_its_csrf_token_is_refused(app: Flask, client: FlaskClient, runtime: Services) -> None:
    oid = seed(runtime.store, "c-1")
    aid = anomaly(runtime.store, oid)
    action = f"/console/anomalies/{aid}/resolve"
    fields = {"comment": "done", "back": "order", "provider": "alixpay", "order": "c-1"}
    assert client.post(action, data=fields).status_code == 400
    assert client.post(action, data={**fields, "csrf_token": "forged"}).status_code == 400
    other = logged_in(app)  # another browser's token is not this one's
    foreign = csrf_of(other.get("/console/orders").text)
    resp = client.post(action, data={**fields, "csrf_token": foreign})
    assert resp.status_code == 400 and "CSRF" in resp.text
    assert runtime.store.order_view("alixpay", "c-1").anomalies[0].resolved_at is None
    assert post_form(client, "/console/orders/alixpay/c-1", action, **fields).status_code == 303
    assert runtime.store.order_view("alixpay", "c-1").anomalies[0].resolution == "done"


def test_the_log_in_and_log_out_forms_need_their_token_too(app: Flask, client: FlaskClient) -> None:
    fresh = app.test_client()
    fresh.get("/console/login")
    assert fresh.post("/console/login", data={"token": OPS_TOKEN}).status_code == 400
    assert fresh.get("/console/orders").status_code == 302
    assert client.post("/console/logout").status_code == 400
    assert client.get("/console/orders").status_code == 200


def test_the_webhooks_and_the_api_take_no_csrf_token(client: FlaskClient, sandbox: AlixSandbox) -> None:
    """The console's checks are its blueprint's only: bearer calls with the console's cookie
    jar and no token work as before."""
    resp = client.post(
        "/api/orders/alixpay",
        json=alixpay_sell("api-1"),
        headers={"Authorization": f"Bearer {PARTNER_TOKEN}"},
    )
    assert resp.status_code == 201, resp.text
    resp = client.post(
        "/api/orders/alixpay/api-1/reconcile", headers={"Authorization": f"Bearer {OPS_TOKEN}"}
    )
    assert resp.status_code == 202 and resp.get_json() == {"status": "queued"}
    resp = client.post("/webhooks/alixpay", data=b"not json", content_type="application/json")
    assert resp.status_code == 400 and resp.get_json()["code"] == "invalid_payload"
    assert "Content-Security-Policy" not in resp.headers


# ------------------------------------------------------------------ orders


def test_orders_newest_first_with_counts_filters_and_keyset_pages(
    client: FlaskClient, runtime: Services
) -> None:
    old = datetime.now(UTC) - timedelta(hours=5)
    for i in range(120):
        seed(
            runtime.store,
            f"o-{i:03d}",
            provider="fuspay" if i % 4 == 0 else "alixpay",
            status="SUCCESS" if i % 3 == 0 else "AWAITING_PAYMENT",
            created_at=old if i < 10 else datetime.now(UTC),
            stuck_at=old if i in (5, 6) else None,
            stuck_reason="no callback since" if i in (5, 6) else None,
        )
    with_anomaly = runtime.store.order_view("alixpay", "o-007").id
    anomaly(runtime.store, with_anomaly)
    first = client.get("/console/orders")
    assert first.status_code == 200
    assert "AWAITING_PAYMENT</span> <strong>80</strong>" in first.text
    assert "SUCCESS</span> <strong>40</strong>" in first.text
    assert first.text.index("o-119") < first.text.index("o-118") and "o-069" not in first.text
    seen = _ids(first.text)
    assert seen == [f"o-{i:03d}" for i in range(119, 69, -1)]
    second = client.get(_next(first.text))
    third = client.get(_next(second.text))
    assert _ids(second.text) == [f"o-{i:03d}" for i in range(69, 19, -1)]
    assert _ids(third.text) == [f"o-{i:03d}" for i in range(19, -1, -1)]
    assert "Older orders" not in third.text and "Newest orders" in third.text

    assert set(_ids(client.get("/console/orders?provider=fuspay").text)) == {
        f"o-{i:03d}" for i in range(120) if i % 4 == 0
    }
    assert "AWAITING_PAYMENT</span> <strong>20</strong>" in client.get("/console/orders?provider=fuspay").text
    assert _ids(client.get("/console/orders?status=success&provider=alixpay").text)[:2] == ["o-117", "o-114"]
    assert _ids(client.get("/console/orders?stuck=true").text) == ["o-006", "o-005"]
    assert len(_ids(client.get("/console/orders?stuck=false&provider=").text)) == 50
    assert _ids(client.get("/console/orders?open_longer_than=2h").text) == [
        f"o-{i:03d}" for i in (8, 7, 5, 4, 2, 1)
    ]
    assert _ids(client.get("/console/orders?has_open_anomalies=true").text) == ["o-007"]
    bad = client.get("/console/orders?open_longer_than=soon")
    assert bad.status_code == 400 and "open_longer_than" in bad.text


def _ids(html: str) -> list[str]:
    return re.findall(r'<th scope="row"><a href="/console/orders/\w+/([^"]+)">', html)


def _next(html: str) -> str:
    match = re.search(r'<a href="(/console/orders\?[^"]*cursor=[^"]+)" rel="next">', html)
    assert match, "no next page"
    return match.group(1).replace("&amp;", "&")


def test_stuck_orders_oldest_first_with_their_reason(client: FlaskClient, runtime: Services) -> None:
    since = datetime.now(UTC) - timedelta(hours=2)
    seed(runtime.store, "s-1", stuck_at=since, stuck_reason="no callback since 2h")
    seed(runtime.store, "s-2")
    seed(runtime.store, "s-3", stuck_at=since, stuck_reason="polls failing (3 in a row)")
    page = client.get("/console/stuck").text
    assert _ids(page) == ["s-1", "s-3"]
    assert "no callback since 2h" in page and "polls failing (3 in a row)" in page
    assert page.count("Reconcile now</button>") == 2


# ------------------------------------------------------------------ one order


def test_the_order_page_shows_the_whole_timeline_with_raw_bodies_masked(
    client: FlaskClient, runtime: Services
) -> None:
    store = runtime.store
    store.apply([alix_callback("t-1", "AWAITING_PAYMENT")])
    store.apply([alix_callback("t-1", "PAYMENT_COMPLETED", source="poll")])
    store.apply([alix_callback("t-1", "SUCCESS", claim="SUCCESS")])
    order = store.order_view("alixpay", "t-1")
    anomaly(store, order.id, kind="amount_mismatch")
    with store.sessions.begin() as s:
        s.add(
            Notification(
                order_id=order.id,
                kind="order.status_changed",
                version=1,
                body="{}",
                created_at=utcnow(),
                attempts=12,
                dead_at=utcnow(),
                last_error="HTTP 500",
            )
        )
    page = client.get("/console/orders/alixpay/t-1")
    assert page.status_code == 200
    html = page.text
    assert "PROCESSING" in html and "ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY" in html
    assert "claim: SUCCESS (unsigned)" in html
    assert "fetched " in html  # the poll's fetch time
    assert "AWAITING_PAYMENT → <strong>PROCESSING</strong>" in html  # a transition, with its source
    assert "amount_mismatch" in html and 'name="comment"' in html
    assert "order.status_changed" in html and "HTTP 500" in html and "Redeliver</button>" in html
    assert html.count("<details><summary>Raw body") == 3
    for personal in (PERSONAL_NAME, PERSONAL_ACCOUNT, PERSONAL_EMAIL):
        assert personal not in html
    assert "&#34;bankAccountName&#34;: &#34;***&#34;" in html or '"bankAccountName": "***"' in html
    assert "****9012" in html or "***" in html
    assert page.headers["Cache-Control"] == "no-store"
    assert "script-src" not in page.headers["Content-Security-Policy"]  # no script at all
    assert client.get("/console/orders/alixpay/nobody").status_code == 404


def test_resolving_an_anomaly_needs_a_comment(client: FlaskClient, runtime: Services) -> None:
    oid = seed(runtime.store, "r-1")
    aid = anomaly(runtime.store, oid)
    page = "/console/orders/alixpay/r-1"
    action = f"/console/anomalies/{aid}/resolve"
    fields = {"back": "order", "provider": "alixpay", "order": "r-1"}
    resp = post_form(client, page, action, comment="  ", **fields)
    assert resp.status_code == 303 and resp.headers["Location"] == page
    assert "a comment" in client.get(page).text
    assert runtime.store.order_view("alixpay", "r-1").anomalies[0].resolved_at is None
    resp = post_form(client, page, action, comment="refunded by hand, ticket 42", **fields)
    assert resp.status_code == 303
    shown = client.get(page).text
    assert f"Anomaly #{aid} (conflict) resolved" in shown
    assert "refunded by hand, ticket 42" in shown and 'name="comment"' not in shown
    assert runtime.store.order_view("alixpay", "r-1").anomalies[0].resolution == "refunded by hand, ticket 42"
    again = post_form(client, page, action, comment="again", **fields)
    assert again.status_code == 303 and "was resolved at" in client.get(page).text


def test_reconcile_waits_for_the_poll_and_shows_the_new_status(
    app: Flask, client: FlaskClient, runtime: Services, redis: Redis, sandbox: AlixSandbox
) -> None:
    api = {"Authorization": f"Bearer {PARTNER_TOKEN}"}
    assert client.post("/api/orders/alixpay", json=alixpay_sell("rc-1"), headers=api).status_code == 201
    sandbox.advance("rc-1", "PAYMENT_COMPLETED")
    page = "/console/orders/alixpay/rc-1"
    token = csrf_of(client.get(page).text)
    answers: list[Any] = []
    thread = threading.Thread(
        target=lambda: answers.append(client.post(page + "/reconcile", data={"csrf_token": token}))
    )
    thread.start()
    deadline = time.monotonic() + 5
    while Queues(redis).polls.count == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    make_worker(runtime).work(burst=True)
    thread.join(15)
    (resp,) = answers
    assert resp.status_code == 303 and resp.headers["Location"] == page
    shown = client.get(page).text
    assert "Reconciled alixpay rc-1: PROCESSING (provider PAYMENT_COMPLETED, applied, version 3)" in shown
    assert '<span class="status PROCESSING">PROCESSING</span>' in shown


def test_reconcile_of_an_order_the_provider_does_not_know_says_the_poll_failed(
    client: FlaskClient, runtime: Services, redis: Redis
) -> None:
    seed(runtime.store, "rc-2")
    page = "/console/orders/alixpay/rc-2"
    token = csrf_of(client.get(page).text)
    answers: list[Any] = []
    thread = threading.Thread(
        target=lambda: answers.append(
            client.post(page + "/reconcile", data={"csrf_token": token, "back": "stuck"})
        )
    )
    thread.start()
    deadline = time.monotonic() + 5
    while Queues(redis).polls.count == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    make_worker(runtime).work(burst=True)
    thread.join(15)
    (resp,) = answers
    assert resp.status_code == 303 and resp.headers["Location"] == "/console/stuck"
    assert "the poll failed" in client.get("/console/stuck").text
    # ... and the failed poll is failed work, requeued from the console
    failed = client.get("/console/failed").text
    assert "rq:polls: 1 dead letter(s)" in failed and "workers.jobs.poll_order" in failed
    resp = post_form(client, "/console/failed", "/console/failed/requeue", source="rq:polls", id="x-none")
    assert "No dead letter x-none" in client.get(resp.headers["Location"]).text
    letter = Queues(redis).polls.failed_job_registry.get_job_ids()[0]
    resp = post_form(client, "/console/failed", "/console/failed/requeue", source="rq:polls", id=letter)
    assert resp.status_code == 303
    assert "Requeued 1 dead letter(s)" in client.get("/console/failed").text
    assert Queues(redis).polls.count == 1 and Queues(redis).polls.failed_job_registry.count == 0


def test_requeue_all(client: FlaskClient, runtime: Services, redis: Redis) -> None:
    for oid in ("q-1", "q-2"):
        seed(runtime.store, oid)
        runtime.queues.enqueue_poll("alixpay", oid, reason="test")
    make_worker(runtime).work(burst=True)
    assert Queues(redis).polls.failed_job_registry.count == 2
    assert "Requeue all 2" in client.get("/console/failed").text
    post_form(client, "/console/failed", "/console/failed/requeue")
    assert Queues(redis).polls.count == 2 and Queues(redis).polls.failed_job_registry.count == 0
    assert "Requeued 2 dead letter(s)" in client.get("/console/failed").text


def test_failed_notifications_are_listed_and_redelivered(client: FlaskClient, runtime: Services) -> None:
    oid = seed(runtime.store, "n-1")
    with runtime.store.sessions.begin() as s:
        note = Notification(
            order_id=oid,
            kind="order.status_changed",
            version=1,
            body="{}",
            created_at=utcnow(),
            attempts=12,
            dead_at=utcnow(),
            last_error="HTTP 503 from the partner",
        )
        s.add(note)
        s.flush()
        nid = note.id
    page = client.get("/console/failed").text
    assert "HTTP 503 from the partner" in page and f"Redeliver notification {nid}" in page
    resp = post_form(client, "/console/failed", f"/console/notifications/{nid}/redeliver", back="failed")
    assert resp.status_code == 303 and resp.headers["Location"] == "/console/failed"
    assert "is due again; NOTIFY_URL is not set" in client.get("/console/failed").text
    with runtime.store.sessions() as s:
        row = s.get(Notification, nid)
        assert row.dead_at is None and row.next_attempt_at is not None
    with runtime.store.sessions.begin() as s:
        s.execute(update(Notification).where(Notification.id == nid).values(delivered_at=utcnow()))
    post_form(client, "/console/failed", f"/console/notifications/{nid}/redeliver")
    assert "was delivered at" in client.get("/console/failed").text


def test_activity_counts_the_last_hour_per_minute_and_shows_queue_depths(
    client: FlaskClient, runtime: Services
) -> None:
    runtime.store.apply([alix_callback("act-1", "AWAITING_PAYMENT")])
    runtime.store.apply([alix_callback("act-1", "AWAITING_PAYMENT", source="poll")])
    runtime.store.apply([alix_callback("act-2", "PAYMENT_COMPLETED")])
    runtime.queues.enqueue_poll("alixpay", "act-1", reason="test")
    html = client.get("/console/activity").text
    assert "In the last hour: 2 callbacks, 2 status transitions and 1 polls." in html
    assert "<polyline" in html and "<script" not in html
    assert '<th scope="row">polls</th><td class="num">1</td>' in html


@pytest.mark.parametrize(
    "url",
    [
        "/console/orders?status=NOT_A_STATUS",
        "/console/orders?provider=nosuchpay",
        "/console/orders?before=not-a-cursor",
        "/console/orders?stuck=maybe",
        "/console/orders/alixpay/" + "x" * 300,
        "/console/orders/alixpay/bad%00id",
    ],
)
def test_bad_input_is_a_4xx_page_naming_it(client: FlaskClient, url: str) -> None:
    resp = client.get(url)
    assert 400 <= resp.status_code < 500, (url, resp.status_code)
    assert "Traceback" not in resp.text


def test_repairs_of_what_does_not_exist_are_refused(client: FlaskClient) -> None:
    # Not an id at all: no such page.
    resp = post_form(client, "/console/orders", "/console/anomalies/not-a-number/resolve", comment="x")
    assert resp.status_code == 404
    # An id of no anomaly: back to the page, with the refusal said (Post/Redirect/Get).
    resp = post_form(client, "/console/orders", "/console/anomalies/99999/resolve", comment="x")
    assert resp.status_code == 303, resp.headers
    page = client.get(resp.headers["Location"])
    assert "no anomaly 99999" in page.text
