"""The Changelly client and adapter against the sandbox (and a canned server), over real HTTP."""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
from changelly_support import API_KEY, Canned, Receiver, keys, settings

from config import Named
from devkit.changelly.sandbox import ChangellySandbox
from orders.db import make_engine
from orders.errors import ProviderRateLimited, ProviderRejected, ProviderResponseInvalid, ProviderUnavailable
from orders.providers import STATUS_MAPS, load_settings
from orders.providers.changelly import signing
from orders.providers.changelly.adapter import ChangellyAdapter
from orders.providers.changelly.client import ChangellyClient
from orders.providers.transport import parse_retry_after
from orders.service import create_order
from orders.states import Status
from orders.store import Store

DAY = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., ChangellySandbox]]:
    started: list[ChangellySandbox] = []

    def make(**kw: Any) -> ChangellySandbox:
        kw.setdefault("callback_private_key", keys().callback)
        sandbox = ChangellySandbox(api_key=API_KEY, partner_public_key=keys().partner.public_key(), **kw)
        started.append(sandbox.start())
        return sandbox

    yield make
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., ChangellySandbox]) -> ChangellySandbox:
    return make_sandbox()


@pytest.fixture
def canned() -> Iterator[Canned]:
    server = Canned()
    yield server
    server.close()


def sell(order_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "externalOrderId": order_id,
        "externalUserId": "u-1",
        "providerCode": "moonpay",
        "currencyFrom": "BTC",
        "currencyTo": "EUR",
        "amountFrom": "0.01",
        "country": "DE",
        "refundAddress": "bc1qrefund",
        **extra,
    }


# -- polling


@pytest.mark.parametrize("shape", ["object", "array"])
def test_poll_by_order_id_and_by_external_order_id(
    make_sandbox: Callable[..., ChangellySandbox], shape: str
) -> None:
    sandbox = make_sandbox(response_shape=shape)
    mine = sandbox.create_order("o-1", amount_from="0.5")
    sandbox.create_order("o-2")
    sandbox.advance("o-1", "pending")
    adapter = ChangellyAdapter(settings(sandbox.url))
    by_external = adapter.poll("o-1")
    by_id = adapter.poll("o-1", provider_order_id=mine["orderId"])
    for event in (by_external, by_id):
        assert (event.external_order_id, event.provider_order_id) == ("o-1", mine["orderId"])
        assert (event.provider_status, event.dedup_key, event.kind) == ("pending", "status:pending", "sell")
        assert (event.crypto_amount, event.crypto_currency) == ("0.5", "BTC")
        # The payout is not final before "complete": no fiat amount yet.
        assert (event.fiat_amount, event.fiat_currency) == (None, "EUR")
        assert event.details["tx_hash"] and event.details["redirect_url"].endswith("/provider")
    sandbox.advance("o-1", "complete")
    done = adapter.poll("o-1", provider_order_id=mine["orderId"])
    assert (done.fiat_amount, done.fiat_currency) == ("29400", "EUR")  # 0.5 * 60000 less 2 %
    with pytest.raises(ProviderRejected, match="not found"):
        adapter.poll("o-unknown")


@pytest.mark.parametrize("shape", ["object", "array"])
def test_backfill_pages_through_a_date_range(
    make_sandbox: Callable[..., ChangellySandbox], shape: str
) -> None:
    sandbox = make_sandbox(response_shape=shape)
    for i in range(9):
        sandbox.create_order(f"o-{i}", created_at=DAY + timedelta(hours=12 * i))
    sandbox.advance("o-3", "complete")
    adapter = ChangellyAdapter(settings(sandbox.url))
    since, until = DAY + timedelta(hours=12), DAY + timedelta(hours=12 * 6)  # o-1 .. o-6
    events = list(adapter.backfill(since, until, page_size=2))
    assert [e.external_order_id for e in events] == [f"o-{i}" for i in range(1, 7)]
    assert {e.external_order_id: e.provider_status for e in events}["o-3"] == "complete"
    assert all(e.source == "poll" and e.kind == "sell" for e in events)
    # Exactly a page's worth in range: the array shape needs one more (empty) page to know.
    assert len(list(adapter.backfill(since, since + timedelta(hours=12), page_size=2))) == 2


def test_backfill_dates_and_paging_are_in_the_signed_url(canned: Canned) -> None:
    canned.reply = (200, b'{"orders":[],"limit":100,"offset":0,"total":0}', {})
    start = datetime.fromisoformat("2026-03-01T01:00:00+01:00")
    assert (
        list(ChangellyAdapter(settings(canned.base)).backfill(start, start + timedelta(days=1), page_size=50))
        == []
    )
    (sent,) = canned.requests
    assert sent["target"] == (
        "/v1/orders?startDate=2026-03-01T00%3A00%3A00.000Z&endDate=2026-03-02T00%3A00%3A00.000Z&offset=0&limit=50"
    )
    assert signing.verify_request(
        canned.base + sent["target"], None, sent["headers"]["X-Api-Signature"], keys().partner.public_key()
    )


# -- creation


def test_create_sell_order_through_the_sandbox(sandbox: ChangellySandbox) -> None:
    adapter = ChangellyAdapter(settings(sandbox.url))
    request = adapter.validate_create(sell("o-new", amountFrom=0.25, userAgent="Agent «ü»", metadata={}))
    event = adapter.submit_create(request)
    held = sandbox.order("o-new")
    assert (event.provider_order_id, event.external_order_id, event.kind) == (
        held["orderId"],
        "o-new",
        "sell",
    )
    assert event.details["redirect_url"] == held["redirectUrl"]
    assert (held["status"], held["amountFrom"], held["userAgent"], held["metadata"]) == (
        "created",
        "0.25",
        "Agent «ü»",
        {},
    )
    answer = json.loads(event.raw_body)
    assert answer["amountFrom"] == 0.25 and answer["state"] is None and answer["ip"] is None
    with pytest.raises(ProviderRejected) as exc:  # the same externalOrderId again
        adapter.submit_create(request)
    assert (exc.value.status, exc.value.code) == (400, "validation")


@pytest.mark.parametrize(
    ("changes", "code", "detail"),
    [({"amountFrom": "0.00001"}, "limits", "min=0.0001"), ({"country": "US", "state": None}, "state", "")],
)
def test_provider_refusals_carry_the_error_type(
    sandbox: ChangellySandbox, changes: dict[str, Any], code: str, detail: str
) -> None:
    client = ChangellyClient(settings(sandbox.url))
    body = {k: v for k, v in sell("o-x", **changes).items() if v is not None}
    with pytest.raises(ProviderRejected) as exc:
        client.create_sell_order(body)
    assert (exc.value.status, exc.value.code) == (400, code)
    assert detail in str(exc.value)


def test_the_sandbox_checks_that_the_bytes_sent_are_the_bytes_signed(sandbox: ChangellySandbox) -> None:
    url = sandbox.url + "/v1/sell/orders"
    signed = signing.body_bytes(sell("o-bytes"))
    respaced = json.dumps(sell("o-bytes")).encode()  # the same JSON, other bytes
    headers = {
        "X-Api-Key": API_KEY,
        "X-Api-Signature": signing.sign_request(url, signed, keys().partner),
        "Content-Type": "application/json",
    }
    refused = requests.post(url, data=respaced, headers=headers, timeout=5)
    assert refused.status_code == 401 and refused.json()["errorType"] == "unauthorized"
    assert requests.post(url, data=signed, headers=headers, timeout=5).status_code == 200
    # A GET signs "{}" and the query string: another query, same signature -> refused.
    get_url = sandbox.url + "/v1/orders?externalOrderId=o-bytes"
    get_headers = {
        "X-Api-Key": API_KEY,
        "X-Api-Signature": signing.sign_request(get_url, None, keys().partner),
    }
    assert requests.get(get_url, headers=get_headers, timeout=5).status_code == 200
    assert requests.get(get_url + "x", headers=get_headers, timeout=5).status_code == 401


def test_settings_from_the_environment_with_base64_pkcs1_keys(sandbox: ChangellySandbox) -> None:
    env = {
        "CHANGELLY_API_KEY": API_KEY,
        "CHANGELLY_PRIVATE_KEY": base64.b64encode(signing.private_key_pem(keys().partner)).decode(),
        "CHANGELLY_CALLBACK_PUBLIC_KEY": base64.b64encode(sandbox.callback_public_key_pem).decode(),
        "CHANGELLY_BASE_URL": sandbox.url,
        "CHANGELLY_TIMEOUT": "3",
    }
    loaded = load_settings(env).provider("changelly")
    assert loaded is not None
    sandbox.create_order("o-env")
    assert ChangellyAdapter(loaded).poll("o-env").provider_status == "created"


# -- errors


def test_wrong_keys_are_unauthorized_and_never_echoed(sandbox: ChangellySandbox) -> None:
    for bad in (
        settings(sandbox.url, api_key="other-key"),
        settings(sandbox.url, private_key=Named("CHANGELLY_PRIVATE_KEY", keys().other)),
    ):
        with pytest.raises(ProviderRejected) as exc:
            ChangellyAdapter(bad).poll("o-1")
        assert (exc.value.status, exc.value.code) == (401, "unauthorized")
        assert "other-key" not in str(exc.value) and API_KEY not in str(exc.value)


def test_rate_limited_calls_say_when_to_retry(sandbox: ChangellySandbox) -> None:
    sandbox.create_order("o-1")
    sandbox.set_switches(rate_limit=2, retry_after=7)
    adapter = ChangellyAdapter(settings(sandbox.url))
    for _ in range(2):
        with pytest.raises(ProviderRateLimited) as exc:
            adapter.poll("o-1")
        assert isinstance(exc.value, ProviderUnavailable)
        assert (exc.value.status, exc.value.code, exc.value.retry_after) == (429, "tooManyRequests", 7.0)
    assert adapter.poll("o-1").provider_status == "created"
    assert sandbox.switches["global"]["rate_limit"] == 0


def test_retry_after_as_an_http_date(canned: Canned) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    canned.reply = (429, b"", {"Retry-After": later})
    with pytest.raises(ProviderRateLimited) as exc:
        ChangellyAdapter(settings(canned.base)).poll("o-1")
    assert exc.value.retry_after is not None and 100 < exc.value.retry_after <= 120
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("-5") == 0.0 and parse_retry_after("99999") == 3600.0


@pytest.mark.parametrize(
    ("status", "kind", "exc_type"),
    [
        (401, "unauthorized", ProviderRejected),
        (403, "forbidden", ProviderRejected),
        (404, "notFound", ProviderRejected),
        (410, "invalidOffer", ProviderRejected),
        (422, "validation", ProviderRejected),
        (500, "internalServerError", ProviderUnavailable),
        (503, "unavailable", ProviderUnavailable),
    ],
)
def test_error_answers_become_named_exceptions(
    canned: Canned, status: int, kind: str, exc_type: type
) -> None:
    body = {"errorType": kind, "errorMessage": f"{kind} happened", "errorDetails": None}
    canned.reply = (status, json.dumps(body).encode(), {})
    with pytest.raises(exc_type) as exc:
        ChangellyAdapter(settings(canned.base)).poll("o-1")
    assert type(exc.value) is exc_type
    assert (exc.value.status, exc.value.code) == (status, kind)
    assert f"{kind}: {kind} happened" in str(exc.value)


def test_unreadable_answers(canned: Canned) -> None:
    adapter = ChangellyAdapter(settings(canned.base))
    canned.reply = (200, b"<html>oops</html>", {})
    with pytest.raises(ProviderResponseInvalid, match="not valid UTF-8 JSON"):
        adapter.poll("o-1")
    canned.reply = (400, b"<html>bad</html>", {})
    with pytest.raises(ProviderRejected) as exc:
        adapter.poll("o-1")
    assert (exc.value.status, exc.value.code) == (400, None)


def test_detail_fail_and_timeouts_are_transient(sandbox: ChangellySandbox) -> None:
    sandbox.create_order("o-1")
    sandbox.set_switches("o-1", detail_fail=True)
    with pytest.raises(ProviderUnavailable) as exc:
        ChangellyAdapter(settings(sandbox.url)).poll("o-1")
    assert (exc.value.status, exc.value.code) == (503, "unavailable")
    sandbox.set_switches("o-1", detail_fail=None, detail_delay=1.0)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as exc:
        ChangellyAdapter(settings(sandbox.url, timeout=0.2)).poll("o-1")
    assert exc.value.code == "timeout" and time.monotonic() - started < 1.0


def test_connection_refused_is_transient() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ProviderUnavailable, match="ConnectionError"):
        ChangellyAdapter(settings(f"http://127.0.0.1:{port}", timeout=1.0)).poll("o-1")


# -- the whole loop with the store


@pytest.fixture
def loop(sandbox: ChangellySandbox, database_url: str) -> Iterator[Callable[[str], Status]]:
    """Create ``o-loop`` through the service; then ``step(status)`` advances it in the
    sandbox, takes the callback the receiver got as a trigger, polls and applies."""
    receiver = Receiver()
    store = Store(make_engine(database_url), STATUS_MAPS, {})
    try:
        sandbox.callback_url = receiver.url
        adapter = ChangellyAdapter(settings(sandbox.url))
        assert create_order(store, adapter, sell("o-loop")).status is Status.CREATED
        kind, provider_order_id = store.order_ref("changelly", "o-loop")
        assert (kind, provider_order_id) == ("sell", sandbox.order("o-loop")["orderId"])

        def step(status: str) -> Status:
            before = len(receiver.posts)
            sandbox.advance("o-loop", status)
            assert sandbox.wait_idle(5)
            post = receiver.posts[before]
            trigger = adapter.parse_callback(post["raw"], post["headers"], datetime.now(UTC))
            # As the worker does: the callback's externalOrderId is unsigned, so the
            # order is found by the signed orderId.
            assert trigger.external_order_id == ""
            ours = store.external_id_for("changelly", trigger.provider_order_id)
            (recorded,) = store.apply([dataclasses.replace(trigger, external_order_id=ours)])
            assert recorded.changed is False
            # A trigger is recorded; the same claim again (pending after a hold) is counted.
            assert recorded.decision.value == "recorded" or recorded.replayed
            polled = adapter.poll("o-loop", kind=kind, provider_order_id=provider_order_id)
            (outcome,) = store.apply([polled])
            return outcome.status

        step.store = store  # type: ignore[attr-defined]
        yield step
    finally:
        receiver.close()
        store.engine.dispose()


def test_create_trigger_poll_apply_through_the_store(
    loop: Callable[[str], Status], sandbox: ChangellySandbox
) -> None:
    assert loop("pending") is Status.PROCESSING
    assert loop("hold") is Status.ON_HOLD
    assert loop("complete") is Status.SUCCESS
    order = loop.store.order_view("changelly", "o-loop")  # type: ignore[attr-defined]
    assert order is not None
    assert order.details["redirect_url"] == sandbox.order("o-loop")["redirectUrl"]
    assert "claimed_status" not in order.details  # a claim is never the order's
    claims = [e.claimed_status for e in order.events if e.source == "callback"]
    assert claims == ["pending", "hold", "complete"]
    assert (order.crypto_amount, order.fiat_amount, order.provider_status) == ("0.01", "588", "complete")


def test_a_poll_after_a_hold_resumes_the_order(loop: Callable[[str], Status]) -> None:
    assert loop("pending") is Status.PROCESSING
    assert loop("hold") is Status.ON_HOLD
    assert loop("pending") is Status.PROCESSING
