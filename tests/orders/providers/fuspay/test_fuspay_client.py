"""The Fuspay adapter's API calls over real HTTP on 127.0.0.1: polling (GetOrder in both
shapes, FetchTransferStatus confirmation), errors, the oracle, and order creation."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fuspay_testkit import (  # noqa: F401 - fixtures
    CURRENT,
    PARTNER,
    PUBLIC,
    SECRET,
    Receiver,
    make_sandbox_fixture,
    receiver_fixture,
    settings_for,
    signed,
    wire,
)
from scenarios import fuspay_sell

from config import Named, PollPolicy
from devkit.fuspay.model import SELL_EVENTS
from devkit.kit import Reply, Request, SandboxKit
from orders.db import make_engine
from orders.errors import (
    InvalidPayload,
    ProviderRejected,
    ProviderResponseInvalid,
    ProviderUnavailable,
    SignatureInvalid,
)
from orders.providers import STATUS_MAPS
from orders.providers.fuspay.adapter import FuspayAdapter
from orders.providers.fuspay.statuses import STATUS_MAP
from orders.service import create_order
from orders.states import Status
from orders.store import Store

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BY_REQUEST = "FUSPAY_SECRET_KEY:request"


class Stub(SandboxKit):
    """Answers every request with a canned reply and records what it was asked."""

    name = "stub"

    def __init__(self, reply: Reply) -> None:
        super().__init__()
        self.reply = reply
        self.requests: list[Request] = []

    def _handle(self, request: Request) -> Reply:
        self.requests.append(request)
        return self.reply


@pytest.fixture
def stub() -> Iterator[Callable[[Reply], Stub]]:
    started: list[Stub] = []

    def make(reply: Reply) -> Stub:
        started.append(Stub(reply).start())
        return started[-1]

    yield make
    for s in started:
        s.stop()


def adapter_for(url: str, **kw: Any) -> FuspayAdapter:
    return FuspayAdapter(settings_for(url, **kw))


# -- polling


@pytest.mark.parametrize("shape", ["event", "statuses"])
@pytest.mark.parametrize("event_name", SELL_EVENTS)
def test_poll_reports_each_sell_event(make_sandbox, shape: str, event_name: str) -> None:
    sandbox = make_sandbox(getorder_shape=shape)
    sandbox.create_order("poll-1", crypto_amount=10)
    sandbox.advance("poll-1", event_name)

    event = adapter_for(sandbox.url).poll("poll-1", kind="sell")

    assert event.provider_status == event_name == sandbox.truth()["poll-1"]
    assert event.source == "poll"
    assert event.verified_by == BY_REQUEST
    assert event.dedup_key == f"event:{event_name}"
    assert (event.kind, event.fiat_amount, event.crypto_amount, event.crypto_currency) == (
        "sell",
        "15000",
        "10",
        "USDT",
    )
    assert event.provider_order_id == f"poll-1_{PARTNER}"
    assert event.details["network"] == "usdt-trc20"
    assert STATUS_MAP.lookup(event.provider_status) is not None


@pytest.mark.parametrize("shape", ["event", "statuses"])
@pytest.mark.parametrize(
    "event_name",
    ["event.buy.init", "event.buy.received.fiat", "event.buy.credited.crypto", "event.buy.error"],
)
def test_poll_finds_a_buy_without_being_told_its_kind(make_sandbox, shape: str, event_name: str) -> None:
    sandbox = make_sandbox(getorder_shape=shape)
    sandbox.create_order("buy-1", "buy", crypto_amount=10)
    sandbox.advance("buy-1", event_name)

    event = adapter_for(sandbox.url).poll("buy-1")

    assert (event.provider_status, event.kind, event.fiat_amount) == (event_name, "buy", "15200")


@pytest.mark.parametrize("shape", ["event", "statuses"])
def test_credited_fiat_is_confirmed_by_the_payout(make_sandbox, shape: str) -> None:
    sandbox = make_sandbox(getorder_shape=shape)
    sandbox.create_order("pay-1")
    sandbox.advance("pay-1", "event.sell.credited.fiat", payout_status="PENDING")
    a = adapter_for(sandbox.url)

    pending = a.poll("pay-1", kind="sell")
    assert pending.provider_status == "event.sell.received.crypto"
    assert pending.details["payout_status"] == "PENDING"
    assert pending.claimed_status == "event.sell.credited.fiat"
    assert "claimed_status" not in pending.details
    assert pending.details["fiat_payment_status"] == "PAID"
    assert '"status":"PENDING"' in pending.raw_body.splitlines()[1]

    for payout in ("SUCCESSFUL", "COMPLETED"):
        sandbox.advance("pay-1", "event.sell.credited.fiat", payout_status=payout)
        paid = a.poll("pay-1", kind="sell")
        assert paid.provider_status == "event.sell.credited.fiat"
        assert paid.details["payout_status"] == payout
        assert "claimed_status" not in paid.details

    sandbox.advance("pay-1", "event.sell.credited.fiat", payout_status="UPSTREAM_GATEWAY_ERROR")
    assert a.poll("pay-1", kind="sell").provider_status == "event.sell.received.crypto"


def test_no_transfer_yet_is_not_paid(make_sandbox) -> None:
    sandbox = make_sandbox()
    sandbox.create_order("pay-2")
    sandbox.advance("pay-2", "event.sell.credited.fiat", payout_status=None)
    event = adapter_for(sandbox.url).poll("pay-2", kind="sell")
    assert event.provider_status == "event.sell.received.crypto"
    assert "payout_status" not in event.details


def test_poll_by_fuspay_reference_only(make_sandbox) -> None:
    sandbox = make_sandbox()
    sandbox.create_order("ref-1")
    event = adapter_for(sandbox.url).poll("", provider_order_id=f"ref-1_{PARTNER}")
    assert event.external_order_id == "ref-1"


def test_unknown_order_is_rejected(make_sandbox) -> None:
    sandbox = make_sandbox()
    sandbox.create_order("sell-only")
    a = adapter_for(sandbox.url)
    with pytest.raises(ProviderRejected, match="not found") as info:
        a.poll("ghost")
    assert info.value.status == 404
    with pytest.raises(ProviderRejected):
        a.poll("sell-only", kind="buy")


def test_wrong_secret_is_rejected_without_leaking_it(make_sandbox) -> None:
    sandbox = make_sandbox()
    sandbox.create_order("auth-1")
    a = adapter_for(sandbox.url, secret_keys=(Named("FUSPAY_SECRET_KEY", "sk_wrong"),))
    with pytest.raises(ProviderRejected) as info:
        a.poll("auth-1")
    assert info.value.status == 401
    assert "sk_wrong" not in str(info.value)


def test_detail_fail_and_delay(make_sandbox) -> None:
    sandbox = make_sandbox()
    sandbox.create_order("slow-1")
    sandbox.set_switches(order_id="slow-1", detail_fail=True)
    with pytest.raises(ProviderUnavailable) as info:
        adapter_for(sandbox.url).poll("slow-1", kind="sell")
    assert info.value.status == 503

    sandbox.set_switches(order_id="slow-1", detail_fail=None, detail_delay=1.0)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="timed out"):
        adapter_for(sandbox.url, timeout=0.2).poll("slow-1", kind="sell")
    assert time.monotonic() - started < 0.9
    sandbox.set_switches(order_id="slow-1", reset=True)
    assert adapter_for(sandbox.url).poll("slow-1", kind="sell").provider_status == "event.sell.init"


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ProviderUnavailable, match="ConnectionError"):
        adapter_for(f"http://127.0.0.1:{port}").poll("x", kind="sell")


@pytest.mark.parametrize(
    ("reply", "error", "text"),
    [
        ((500, {"error": True}), ProviderUnavailable, "HTTP 500"),
        ((429, {"message": "slow down"}), ProviderUnavailable, "HTTP 429"),
        ((408, b""), ProviderUnavailable, "HTTP 408"),
        (
            (400, {"error": True, "message": "order_no is invalid", "data": None}),
            ProviderRejected,
            "order_no is invalid",
        ),
        ((403, b"<html>forbidden</html>"), ProviderRejected, "HTTP 403"),
        (
            (200, {"success": False, "message": "Partner not activated"}),
            ProviderRejected,
            "Partner not activated",
        ),
        ((200, {"error": True, "message": "bad"}), ProviderRejected, "bad"),
        ((200, b"<html>ok</html>"), ProviderResponseInvalid, "not valid UTF-8 JSON"),
        ((200, ["x"]), ProviderResponseInvalid, "not an object"),
        (
            (200, {"success": True, "data": {"partner_order_id": "someone-else"}}),
            ProviderResponseInvalid,
            "another order",
        ),
    ],
)
def test_http_answers_become_named_errors(stub, reply: Reply, error: type[Exception], text: str) -> None:
    server = stub(reply)
    with pytest.raises(error, match=text):
        adapter_for(server.url).poll("o-1", kind="sell")
    (request,) = server.requests
    assert request.method == "GET"
    assert request.path == "/Axis/GetOrder/"
    assert request.arg("order_type") == "sell" and request.arg("order_no") == "o-1"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["X-Partner-Id"] == PARTNER


def test_a_one_element_list_is_read(stub) -> None:
    data = [{"partner_order_id": "o-1", "fiat_payment_status": "STARTED", "crypto_payment_status": "PAID"}]
    server = stub((200, {"success": True, "message": "OK", "data": data}))
    assert adapter_for(server.url).poll("o-1", kind="sell").provider_status == "event.sell.received.crypto"


def test_a_message_never_carries_a_key(stub) -> None:
    server = stub((400, {"error": True, "message": f"bad token Bearer {SECRET}", "data": None}))
    with pytest.raises(ProviderRejected) as info:
        adapter_for(server.url).poll("o-1", kind="sell")
    assert SECRET not in str(info.value)
    assert "***" in str(info.value)


# -- the oracle


def test_oracle_mode_verifies_sandbox_events(make_sandbox, receiver) -> None:
    sandbox = make_sandbox(callback_url=receiver.url, recipe="sha512-prepend")
    sandbox.create_order("orc-1")
    sandbox.advance("orc-1", "event.sell.received.crypto")
    assert sandbox.wait_idle(3)
    init, received = receiver.raws()
    a = adapter_for(sandbox.url, recipe="oracle")

    assert a.parse_callback(received, {}, AT).verified_by == "oracle:" + CURRENT
    assert a.parse_callback(init, {}, AT).provider_status == "event.sell.init"
    forged = json.loads(received)
    forged["crypto_amount_to_sell"] = 1
    with pytest.raises(SignatureInvalid):
        a.parse_callback(wire(forged), {}, AT)


def test_oracle_tries_previous_keys(make_sandbox) -> None:
    sandbox = make_sandbox()
    sandbox.create_order("orc-2")
    raw = wire(sandbox.signed_event("orc-2"))
    publics = (Named("FUSPAY_PUBLIC_KEY", "pk_next"), Named("FUSPAY_PUBLIC_KEY_PREVIOUS", PUBLIC))
    a = adapter_for(sandbox.url, recipe="oracle", public_keys=publics)
    assert a.parse_callback(raw, {}, AT).verified_by == "oracle:FUSPAY_PUBLIC_KEY_PREVIOUS+FUSPAY_SECRET_KEY"
    # Every call, the oracle's too, is authorised with the current secret: once Fuspay
    # has rotated it, the previous one no longer opens the oracle.
    secrets = (Named("FUSPAY_SECRET_KEY", "sk_next"), Named("FUSPAY_SECRET_KEY_PREVIOUS", SECRET))
    with pytest.raises(ProviderRejected) as info:
        adapter_for(sandbox.url, recipe="oracle", secret_keys=secrets).parse_callback(raw, {}, AT)
    assert info.value.status == 401


def test_oracle_unreachable_is_unavailable(make_sandbox) -> None:
    sandbox = make_sandbox()
    sandbox.create_order("orc-3")
    raw = wire(sandbox.signed_event("orc-3"))
    url = sandbox.url
    sandbox.stop()
    with pytest.raises(ProviderUnavailable):
        adapter_for(url, recipe="oracle").parse_callback(raw, {}, AT)


@pytest.mark.parametrize(
    "answer",
    [
        {"signature": "SIG"},
        {"success": True, "data": {"signature": "SIG"}},
        {"success": True, "data": "SIG"},
    ],
    ids=["signature", "data.signature", "data"],
)
def test_oracle_answer_shapes(stub, answer: dict[str, Any]) -> None:
    body = {"event_name": "event.sell.init", "partner_order_id": "o-1"}
    signature = json.dumps(answer).replace("SIG", "ab" * 64)
    server = stub((200, json.loads(signature)))
    a = adapter_for(server.url, recipe="oracle")
    event = a.parse_callback(wire({**body, "signature": "AB" * 64}), {}, AT)
    assert event.verified_by == "oracle:" + CURRENT
    (request,) = server.requests
    assert request.path == "/PartnerP2P/SignRequestSha512/"
    assert request.raw == wire({**body, "secret": PUBLIC + SECRET})
    assert request.headers["Authorization"] == f"Bearer {SECRET}"


def test_oracle_answer_without_signature_is_invalid(stub) -> None:
    server = stub((200, {"success": True, "data": None}))
    body = {"event_name": "event.sell.init", "partner_order_id": "o-1", "signature": "ab"}
    with pytest.raises(ProviderResponseInvalid, match="no signature"):
        adapter_for(server.url, recipe="oracle").parse_callback(wire(body), {}, AT)


# -- creation


sell_request = fuspay_sell


def test_validate_create() -> None:
    a = FuspayAdapter(settings_for(callback_url="http://127.0.0.1:9/webhooks/fuspay"))
    valid = a.validate_create(sell_request("c-1"))
    assert valid["partner_callback_url"] == "http://127.0.0.1:9/webhooks/fuspay"
    assert valid["kind"] == "sell"
    assert (
        a.validate_create(sell_request("c-1", partner_callback_url="https://partner.example/hook"))[
            "partner_callback_url"
        ]
        == "https://partner.example/hook"
    )

    with pytest.raises(InvalidPayload) as info:
        a.validate_create(
            {"partner_order_id": "c-2", "crypto_amount": "0", "seller_email": "nope", "colour": "red"}
        )
    assert info.value.fields == sorted(
        [
            "account_code",
            "account_name",
            "account_number",
            "chain",
            "colour",
            "crypto_amount",
            "fiat_currency_to_receive",
            "first_name",
            "intrapay_merchant_id",
            "last_name",
            "markup_fee",
            "refund_wallet_address",
            "seller_email",
            "seller_phone",
        ]
    )
    for bad in ({"crypto_amount": 25}, {"crypto_amount": "abc"}, {"markup_fee": "-1"}, {"kind": "buy"}):
        with pytest.raises(InvalidPayload) as info:
            a.validate_create(sell_request("c-3", **bad))
        assert info.value.fields == list(bad)


def test_callback_url_is_required_without_a_setting() -> None:
    a = FuspayAdapter(settings_for(callback_url=None))
    with pytest.raises(InvalidPayload) as info:
        a.validate_create(sell_request("c-4"))
    assert info.value.fields == ["partner_callback_url"]


def test_creation_event_keeps_no_personal_data() -> None:
    a = FuspayAdapter(settings_for())
    event = a.creation_event(a.validate_create(sell_request("c-5")), AT)
    assert (event.source, event.provider_status, event.dedup_key, event.kind) == (
        "create",
        None,
        "create",
        "sell",
    )
    assert (event.crypto_amount, event.crypto_currency, event.fiat_currency) == ("25.5", "USDT", "NGN")
    for personal in ("Avis", "Charles", "0123456789", "seller@example.com", "+2348000000000"):
        assert personal not in event.raw_body
    assert "090405" in event.raw_body


def test_submit_create_then_the_sandbox_emits_init(make_sandbox, receiver) -> None:
    sandbox = make_sandbox()
    a = FuspayAdapter(settings_for(sandbox.url, callback_url=receiver.url))

    assert a.submit_create(a.validate_create(sell_request("c-6"))) is None

    assert sandbox.wait_idle(3)
    (raw,) = receiver.raws()
    event = a.parse_callback(raw, {}, AT)
    assert (event.provider_status, event.external_order_id, event.verified_by) == (
        "event.sell.init",
        "c-6",
        CURRENT,
    )
    assert (event.crypto_amount, event.fiat_amount) == ("25.5", "38250")
    assert event.details["wallet_address"].startswith("T")
    assert sandbox.order("c-6")["seller_fiat_account"]["account_code"] == "090405"

    with pytest.raises(ProviderRejected, match="duplicate") as info:
        a.submit_create(a.validate_create(sell_request("c-6")))
    assert info.value.status == 400
    wrong = FuspayAdapter(settings_for(sandbox.url, secret_keys=(Named("FUSPAY_SECRET_KEY", "sk_bad"),)))
    with pytest.raises(ProviderRejected) as info:
        wrong.submit_create(wrong.validate_create(sell_request("c-7")))
    assert info.value.status == 401
    assert sandbox.truth() == {"c-6": "event.sell.init"}


def test_create_order_records_created_then_init_applies(make_sandbox, receiver, database_url: str) -> None:
    sandbox = make_sandbox()
    a = FuspayAdapter(settings_for(sandbox.url, callback_url=receiver.url))
    store = Store(make_engine(database_url), STATUS_MAPS, {"fuspay": PollPolicy(backoff=(10,), horizon=3600)})
    try:
        created = create_order(store, a, sell_request("c-8"))
        assert created.status is Status.CREATED
        assert sandbox.wait_idle(3)
        (applied,) = store.apply([a.parse_callback(receiver.raws()[0], {}, AT)])
        assert applied.status is Status.AWAITING_PAYMENT
        (polled,) = store.apply([a.poll("c-8", kind="sell")])
        assert polled.decision == "confirmed"  # the newest answer finds it where it is
    finally:
        store.engine.dispose()


def test_signed_helper_matches_the_sandbox(make_sandbox) -> None:
    """The sandbox and the tests sign with the same code: re-signing its body changes nothing."""
    sandbox = make_sandbox()
    sandbox.create_order("same-1")
    body = sandbox.signed_event("same-1")
    assert signed(body) == body


def test_submit_create_sends_the_documented_body(stub) -> None:
    server = stub((200, {"message": "OK"}))
    a = adapter_for(server.url)
    assert a.submit_create(a.validate_create(dict(reversed(list(sell_request("c-9").items()))))) is None
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/Axis/InitiateSellOrder/")
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["x-partner-id"] == PARTNER
    assert list(json.loads(request.raw)) == [
        "partner_order_id",
        "chain",
        "crypto_amount",
        "fiat_currency_to_receive",
        "partner_callback_url",
        "seller_phone",
        "seller_email",
        "first_name",
        "last_name",
        "account_name",
        "account_number",
        "account_code",
        "intrapay_merchant_id",
        "markup_fee",
        "refund_wallet_address",
    ]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ((400, {"error": True, "message": "chain not supported", "data": None}), ProviderRejected),
        ((200, {"error": True, "message": "chain not supported", "data": None}), ProviderRejected),
        ((502, b"bad gateway"), ProviderUnavailable),
        ((200, b"OK"), ProviderResponseInvalid),
    ],
)
def test_submit_create_errors(stub, reply: Reply, error: type[Exception]) -> None:
    a = adapter_for(stub(reply).url)
    with pytest.raises(error):
        a.submit_create(a.validate_create(sell_request("c-10")))
