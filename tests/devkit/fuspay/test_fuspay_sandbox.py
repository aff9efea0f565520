"""The Fuspay sandbox itself: realistic events, its endpoints and their checks, fault
switches, the control API and the CLI. Real HTTP on 127.0.0.1 only."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from fuspay_testkit import (  # noqa: F401 - fixtures
    PARTNER,
    PUBLIC,
    SECRET,
    Receiver,
    fixture,
    make_sandbox_fixture,
    receiver_fixture,
    settings_for,
)

from devkit.fuspay.sandbox import FuspaySandbox
from orders.errors import SignatureInvalid
from orders.providers.fuspay import signing
from orders.providers.fuspay.adapter import FuspayAdapter

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[3]
SELL_REQUEST = {
    "partner_order_id": "cli-2",
    "chain": "usdt-trc20",
    "crypto_amount": "10",
    "fiat_currency_to_receive": "NGN",
    "seller_phone": "+2348000000000",
    "seller_email": "seller@example.com",
    "first_name": "Avis",
    "last_name": "Charles",
    "account_name": "Avis Charles",
    "account_number": "0123456789",
    "account_code": "090405",
    "intrapay_merchant_id": "ipm",
    "markup_fee": "0",
    "refund_wallet_address": "T-refund",
}
AUTH = {"Authorization": f"Bearer {SECRET}", "x-partner-id": PARTNER}


def parse(raw: bytes):
    return FuspayAdapter(settings_for()).parse_callback(raw, {}, AT)


# -- events


def test_events_follow_the_sample_field_order(make_sandbox, receiver) -> None:
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.create_order("ord-1")
    sandbox.advance("ord-1", "event.sell.received.fiat_kyc_error")
    sandbox.advance("ord-1", "sell.event.close")
    assert sandbox.wait_idle(3)
    init, kyc, close = (json.loads(raw) for raw in receiver.raws())

    assert list(init) == [*fixture("event_sell_init"), "signature"]
    kyc_sample = list(fixture("event_sell_received_fiat_kyc_error__fixed_double_comma"))
    assert list(kyc) == [*kyc_sample[:16], "signature", *kyc_sample[16:]]
    assert list(close)[-2:] == ["signature", "meta_data"]
    assert list(fixture("event_buy_init__constructed")) == list(sandbox.create_order("ord-2", "buy"))
    assert receiver.raws()[0].startswith(b'{"event_name":"event.sell.init","partner_order_id":"ord-1"')
    assert all(len(json.loads(r)["signature"]) == 128 for r in receiver.raws())


def test_advance_moves_statuses_and_payout_realistically(make_sandbox) -> None:
    sandbox = make_sandbox()
    order = sandbox.create_order("ord-3", crypto_amount="12.5")
    assert (order["fiat_payment_status"], order["crypto_payment_status"]) == ("PENDING", "PENDING")
    assert (order["crypto_amount_to_sell"], order["fiat_amount_to_receive"]) == (12.5, 18750)

    steps = {
        "event.sell.received.crypto": ("STARTED", "PAID", "PENDING"),
        "event.sell.received.fiat_kyc_error": ("STARTED", "PAID", "PENDING"),
        "event.sell.credited.fiat": ("PAID", "PAID", "SUCCESSFUL"),
    }
    for event, (fiat, crypto, payout) in steps.items():
        order = sandbox.advance("ord-3", event)
        assert (order["fiat_payment_status"], order["crypto_payment_status"]) == (fiat, crypto)
        assert order["seller_crypto_txn_hash"]
        got = requests.get(
            sandbox.url + "/Axis/FetchTransferStatus",
            params={"partner_order_id": "ord-3"},
            headers=AUTH,
            timeout=5,
        )
        assert got.json()["data"]["status"] == payout
        assert ("kyc_error_type" in order) is (event == "event.sell.received.fiat_kyc_error")
    assert sandbox.truth() == {"ord-3": "event.sell.credited.fiat"}

    sandbox.create_order("ord-4")
    before = requests.get(
        sandbox.url + "/Axis/FetchTransferStatus",
        params={"partner_order_id": "ord-4"},
        headers=AUTH,
        timeout=5,
    )
    assert before.status_code == 404
    order = sandbox.advance("ord-4", "event.sell.error")
    assert (order["fiat_payment_status"], order["crypto_payment_status"]) == ("CANCELED", "CANCELED")
    order = sandbox.advance("ord-4", "sell.event.close", meta_data={"status": "failed"})
    assert order["meta_data"]["status"] == "failed"
    assert order["meta_data"]["message"] == "seller has been refunded"

    with pytest.raises(ValueError, match="unknown sell event"):
        sandbox.advance("ord-4", "event.buy.init")
    with pytest.raises(KeyError):
        sandbox.advance("ghost", "event.sell.init")
    with pytest.raises(ValueError, match="payout_status"):
        sandbox.advance("ord-4", "event.sell.error", payout_status=3)
    assert sandbox.truth()["ord-4"] == "sell.event.close"


def test_events_are_signed_by_the_chosen_recipe_and_key_mode(make_sandbox, receiver) -> None:
    sandbox = make_sandbox(callback_url=receiver.url, recipe="sha512-append", key_mode="secret")
    sandbox.create_order("ord-5")
    assert sandbox.wait_idle(3)
    (raw,) = receiver.raws()
    a = FuspayAdapter(settings_for(recipe="sha512-append", key_mode="secret"))
    assert a.parse_callback(raw, {}, AT).verified_by == "FUSPAY_SECRET_KEY"
    with pytest.raises(SignatureInvalid, match="does not verify"):
        parse(raw)


def test_the_order_callback_url_wins(make_sandbox, receiver) -> None:
    other = Receiver()
    try:
        sandbox = make_sandbox(callback_url=other.url)
        sandbox.create_order("ord-6", callback_url=receiver.url)
        sandbox.create_order("ord-7")
        assert sandbox.wait_idle(3)
        assert receiver.events() == ["event.sell.init"]
        assert other.events() == ["event.sell.init"]
        assert json.loads(receiver.raws()[0])["partner_callback_url"] == receiver.url
    finally:
        other.close()


# -- endpoints


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/Axis/InitiateSellOrder/"),
        ("GET", "/Axis/GetOrder/?order_type=sell&order_no=x"),
        ("GET", "/Axis/FetchTransferStatus?partner_order_id=x"),
        ("POST", "/PartnerP2P/SignRequestSha512/"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-partner-id": PARTNER},
        {"Authorization": f"Bearer {PUBLIC}", "x-partner-id": PARTNER},
        {**AUTH, "x-partner-id": "p0"},
    ],
    ids=["none", "no-bearer", "public-key-bearer", "other-partner"],
)
def test_every_endpoint_checks_credentials(
    make_sandbox, method: str, path: str, headers: dict[str, str]
) -> None:
    sandbox = make_sandbox()
    resp = requests.request(method, sandbox.url + path, json={}, headers=headers, timeout=5)
    assert resp.status_code == 401
    assert resp.json() == {"error": True, "message": "Unauthorized", "data": None}


def test_initiate_sell_order_checks_its_body(make_sandbox) -> None:
    sandbox = make_sandbox()
    url = sandbox.url + "/Axis/InitiateSellOrder/"
    good = {
        "partner_order_id": "api-1",
        "chain": "usdt-trc20",
        "crypto_amount": "10",
        "fiat_currency_to_receive": "NGN",
        "partner_callback_url": "http://127.0.0.1:9/hook",
        "seller_phone": "+2348000000000",
        "seller_email": "s@example.com",
        "first_name": "A",
        "last_name": "B",
        "account_name": "A B",
        "account_number": "0123456789",
        "account_code": "090405",
        "intrapay_merchant_id": "ipm",
        "markup_fee": "0",
        "refund_wallet_address": "T-refund",
    }
    bad = [
        ({k: v for k, v in good.items() if k != "seller_email"}, "seller_email"),
        ({**good, "crypto_amount": 10}, "crypto_amount"),
        ({**good, "crypto_amount": "-1"}, "positive"),
        ({**good, "chain": "usdt"}, "chain"),
        ({**good, "partner_callback_url": "https://partner.example/hook"}, "loopback"),
        ({**good, "surprise": "x"}, "unknown fields: surprise"),
    ]
    for body, reason in bad:
        resp = requests.post(url, json=body, headers=AUTH, timeout=5)
        assert resp.status_code == 400, reason
        assert resp.json()["error"] is True and reason in resp.json()["message"]
    assert requests.post(url, data=b"[1]", headers=AUTH, timeout=5).status_code == 400
    assert requests.post(url, json=good, headers=AUTH, timeout=5).json() == {"message": "OK"}
    assert requests.post(url, json=good, headers=AUTH, timeout=5).status_code == 400
    assert sandbox.truth() == {"api-1": "event.sell.init"}
    assert requests.get(url, headers=AUTH, timeout=5).status_code == 405
    assert requests.get(sandbox.url + "/Axis/Nowhere", headers=AUTH, timeout=5).status_code == 404


def test_get_order_shapes(make_sandbox) -> None:
    for shape in ("event", "statuses"):
        sandbox = make_sandbox(getorder_shape=shape)
        sandbox.create_order("go-1")
        url = sandbox.url + "/Axis/GetOrder/"
        resp = requests.get(url, params={"order_type": "sell", "order_no": "go-1"}, headers=AUTH, timeout=5)
        data = resp.json()["data"]
        assert resp.json()["success"] is True
        assert ("event_name" in data) is (shape == "event")
        assert "signature" not in data
        missing = requests.get(url, params={"order_type": "buy", "order_no": "go-1"}, headers=AUTH, timeout=5)
        assert (missing.status_code, missing.json()["success"]) == (404, False)
        assert requests.get(url, params={"order_no": "go-1"}, headers=AUTH, timeout=5).status_code == 400


def test_oracle_signs_what_it_is_given(make_sandbox) -> None:
    sandbox = make_sandbox(recipe="sha512-prepend")
    body = {"b": 1.0, "a": "x"}
    resp = requests.post(
        sandbox.url + "/PartnerP2P/SignRequestSha512/", json={**body, "secret": "k"}, headers=AUTH, timeout=5
    )
    assert resp.json()["data"]["signature"] == signing.sign(body, "k", "sha512-prepend")
    no_secret = requests.post(
        sandbox.url + "/PartnerP2P/SignRequestSha512/", json=body, headers=AUTH, timeout=5
    )
    assert no_secret.status_code == 400


def test_constructor_checks() -> None:
    common = {"partner_id": PARTNER, "public_key": PUBLIC, "secret_key": SECRET}
    for bad, match in (
        ({"host": "192.0.2.1"}, "loopback"),
        ({"callback_url": "http://example.com/hook"}, "loopback"),
        ({"recipe": "oracle"}, "recipe"),
        ({"key_mode": "public"}, "key_mode"),
        ({"getorder_shape": "list"}, "getorder_shape"),
        ({"secret_key": ""}, "secret_key"),
    ):
        with pytest.raises(ValueError, match=match):
            FuspaySandbox(**{**common, **bad})
    with pytest.raises(ValueError, match="loopback"):
        FuspaySandbox(**common).create_order("o", callback_url="https://partner.example/hook")


# -- switches


def test_drop(make_sandbox, receiver) -> None:
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.set_switches(drop=True)
    sandbox.create_order("sw-1")
    sandbox.advance("sw-1", "event.sell.received.crypto")
    assert sandbox.wait_idle(3)
    assert receiver.raws() == []
    assert sandbox.deliveries == []
    assert sandbox.dropped == [("sw-1", "event.sell.init"), ("sw-1", "event.sell.received.crypto")]
    assert sandbox.truth() == {"sw-1": "event.sell.received.crypto"}


def test_duplicate(make_sandbox, receiver) -> None:
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.set_switches(duplicate=2)
    sandbox.create_order("sw-2")
    assert sandbox.wait_idle(3)
    assert len(receiver.raws()) == 3 and len(set(receiver.raws())) == 1
    assert sandbox.deliveries == [("sw-2", "event.sell.init", 200)] * 3


def test_reorder_then_flush_delivers_newest_first(make_sandbox, receiver) -> None:
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.set_switches(reorder=True)
    sandbox.create_order("sw-3")
    for event in ("event.sell.received.crypto", "event.sell.credited.fiat"):
        sandbox.advance("sw-3", event)
    assert sandbox.wait_idle(3)
    assert receiver.raws() == [] and sandbox.held == 3

    assert sandbox.flush() == 3
    assert sandbox.wait_idle(3)
    assert receiver.events() == ["event.sell.credited.fiat", "event.sell.received.crypto", "event.sell.init"]
    assert [parse(raw).provider_status for raw in receiver.raws()] == receiver.events()
    assert sandbox.flush() == 0


def test_delay(make_sandbox, receiver) -> None:
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.set_switches(delay=0.3)
    started = time.monotonic()
    sandbox.create_order("sw-4")
    assert not sandbox.wait_idle(0.1)
    assert receiver.raws() == []
    assert sandbox.wait_idle(3)
    assert receiver.posts[0]["at"] - started >= 0.3


def test_per_order_switches_override_global(make_sandbox, receiver) -> None:
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.set_switches(drop=True)
    sandbox.set_switches(order_id="sw-6", drop=False)
    sandbox.create_order("sw-5")
    sandbox.create_order("sw-6")
    assert sandbox.wait_idle(3)
    assert [json.loads(r)["partner_order_id"] for r in receiver.raws()] == ["sw-6"]
    assert sandbox.switches["orders"] == {"sw-6": {"drop": False}}
    with pytest.raises(ValueError, match="unknown switches"):
        sandbox.set_switches(ipn_on_create=True)


def test_autopilot(make_sandbox, receiver) -> None:
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.create_order("auto-1")
    steps = ["event.sell.received.crypto", "event.sell.credited.fiat"]
    thread = sandbox.autopilot("auto-1", steps, 0.02)
    thread.join(5)
    assert sandbox.wait_idle(3)
    assert receiver.events("auto-1") == ["event.sell.init", *steps]
    with pytest.raises(ValueError, match="unknown events"):
        sandbox.autopilot("auto-1", ["event.sell.done"], 0.02)


def test_control_api(make_sandbox, receiver) -> None:
    sandbox = make_sandbox(callback_url=receiver.url)
    base = sandbox.url + "/sandbox"

    created = requests.post(
        base + "/orders", json={"partner_order_id": "ctl-1", "crypto_amount": "5"}, timeout=5
    )
    assert created.status_code == 200
    assert created.json()["crypto_amount_to_sell"] == 5
    assert requests.post(base + "/orders", json={"partner_order_id": "ctl-1"}, timeout=5).status_code == 400
    assert (
        requests.post(base + "/switches", json={"order_id": "ctl-1", "reorder": True}, timeout=5).status_code
        == 200
    )
    moved = requests.post(
        base + "/orders/ctl-1/advance",
        json={"event": "event.sell.credited.fiat", "payout_status": "PENDING"},
        timeout=5,
    )
    assert moved.json()["fiat_payment_status"] == "PAID"
    assert requests.post(base + "/orders/ctl-1/advance", json={"event": "nope"}, timeout=5).status_code == 400
    assert (
        requests.post(
            base + "/orders/ghost/advance", json={"event": "event.sell.init"}, timeout=5
        ).status_code
        == 404
    )
    assert requests.get(base + "/orders", timeout=5).json() == {
        "orders": {"ctl-1": "event.sell.credited.fiat"}
    }
    assert requests.get(base + "/orders/ctl-1", timeout=5).json()["partner_order_id"] == "ctl-1"
    assert requests.get(base + "/orders/ghost", timeout=5).status_code == 404

    assert requests.post(base + "/flush", timeout=5).json() == {"flushed": 1}
    assert sandbox.wait_idle(3)
    report = requests.get(base + "/deliveries", timeout=5).json()
    assert report["deliveries"] == [
        ["ctl-1", "event.sell.init", 200],
        ["ctl-1", "event.sell.credited.fiat", 200],
    ]
    assert (report["held"], report["pending"]) == (0, 0)
    assert report["dropped"] == []


# -- CLI


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the sandbox printed nothing"
    return proc.stdout.readline().strip()


def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    stderr = (tmp_path / "stderr.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devkit.fuspay",
            "--port",
            "0",
            "--partner-id",
            PARTNER,
            "--public-key",
            PUBLIC,
            "--secret-key",
            SECRET,
            "--recipe",
            "sha512-append",
            "--getorder-shape",
            "statuses",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    stderr.close()
    try:
        line = _read_line(proc, 10)
        assert line.startswith("fuspay sandbox listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        requests.post(
            url + "/sandbox/orders", json={"partner_order_id": "cli-1"}, timeout=5
        ).raise_for_status()
        event = FuspayAdapter(settings_for(url)).poll("cli-1", kind="sell")
        assert event.provider_status == "event.sell.init"
        a = FuspayAdapter(settings_for(url, callback_url="http://127.0.0.1:9/hook"))
        assert a.submit_create(a.validate_create(SELL_REQUEST)) is None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            assert proc.stdout is not None
            proc.stdout.close()
    log = (tmp_path / "stderr.log").read_text()
    assert "order cli-2 created" in log
    for personal in ("0123456789", "seller@example.com", "+2348000000000", "Avis"):
        assert personal not in log
