"""The Changelly sandbox itself: callbacks, sandbox endpoints, switches, control API and CLI."""

from __future__ import annotations

import json
import logging
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from changelly_support import API_KEY, Receiver, keys, settings
from cryptography.hazmat.primitives import serialization

from config import Named
from devkit.changelly.sandbox import STATUSES, ChangellySandbox
from orders.errors import ProviderRejected
from orders.providers.changelly import signing
from orders.providers.changelly.adapter import ChangellyAdapter
from orders.providers.changelly.client import ChangellyClient

REPO = Path(__file__).resolve().parents[3]
CALLBACK_FIELDS = {
    "redirectUrl",
    "orderId",
    "status",
    "externalUserId",
    "externalOrderId",
    "providerCode",
    "currencyFrom",
    "currencyTo",
    "amountFrom",
    "country",
    "state",
    "ip",
    "refundAddress",
    "paymentMethod",
    "userAgent",
    "metadata",
    "createdAt",
    "payinAmount",
    "payoutAmount",
    "payinCurrency",
    "payoutCurrency",
    "transactionHash",
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture
def sandbox(receiver: Receiver) -> Iterator[ChangellySandbox]:
    with ChangellySandbox(
        api_key=API_KEY,
        partner_public_key=keys().partner.public_key(),
        callback_private_key=keys().callback,
        callback_url=receiver.url,
    ) as sb:
        yield sb


def client(sandbox: ChangellySandbox) -> ChangellyClient:
    return ChangellyClient(settings(sandbox.url))


def delivered(sandbox: ChangellySandbox) -> list[tuple[str, str]]:
    assert sandbox.wait_idle(5)
    return [(order_id, status) for order_id, status, _ in sandbox.deliveries]


# -- callbacks


def test_callback_carries_the_documented_fields_and_signs_only_the_order_id(
    sandbox: ChangellySandbox, receiver: Receiver
) -> None:
    order = sandbox.create_order("o-1", amount_from=0.002)
    sandbox.advance("o-1", "pending")
    assert delivered(sandbox) == [("o-1", "pending")]
    (post,) = receiver.posts
    body = json.loads(post["raw"])
    assert set(body) == CALLBACK_FIELDS
    assert (body["orderId"], body["status"], body["amountFrom"]) == (order["orderId"], "pending", "0.002")
    signature = post["headers"]["X-Callback-Signature"]
    assert (
        signing.verify_callback(order["orderId"], signature, [Named("K", sandbox.callback_public_key)]) == "K"
    )
    event = ChangellyAdapter(settings(sandbox.url)).parse_callback(
        post["raw"], post["headers"], datetime.now(UTC)
    )
    assert (event.provider_order_id, event.external_order_id) == (order["orderId"], "")


def test_patch_changes_the_status_and_sends_a_callback(sandbox: ChangellySandbox) -> None:
    order = sandbox.create_order("o-1")
    answer = client(sandbox).request(
        "PATCH", f"/v1/sandbox/order/{order['orderId']}", body={"status": "hold"}
    )
    assert answer.data["status"] == "hold" and sandbox.truth() == {"o-1": "hold"}
    assert delivered(sandbox) == [("o-1", "hold")]


@pytest.mark.parametrize(("target", "status", "code"), [("known", "paid", 400), ("unknown", "pending", 404)])
def test_patch_refuses_unknown_statuses_and_orders(
    sandbox: ChangellySandbox, target: str, status: str, code: int
) -> None:
    order = sandbox.create_order("o-1")
    order_id = order["orderId"] if target == "known" else "o-1"  # ours is not Changelly's id
    with pytest.raises(ProviderRejected) as exc:
        client(sandbox).request("PATCH", f"/v1/sandbox/order/{order_id}", body={"status": status})
    assert exc.value.status == code
    assert sandbox.truth() == {"o-1": "created"} and delivered(sandbox) == []


def test_resend_callback_answers_post_and_get(sandbox: ChangellySandbox) -> None:
    order_id = sandbox.create_order("o-1")["orderId"]
    sandbox.advance("o-1", "pending")
    path = f"/v1/sandbox/order/{order_id}/resend-callback"
    assert client(sandbox).request("POST", path, body={}).data == {"orderId": order_id, "status": "pending"}
    client(sandbox).request("GET", path)  # the docs' cURL sample uses GET (doc bug C-5)
    assert delivered(sandbox) == [("o-1", "pending")] * 3


# -- switches


def test_drop_swallows_callbacks_globally_or_per_order(sandbox: ChangellySandbox) -> None:
    sandbox.create_order("o-1")
    sandbox.create_order("o-2")
    sandbox.set_switches("o-1", drop=True)
    sandbox.advance("o-1", "pending")
    sandbox.advance("o-2", "pending")
    assert delivered(sandbox) == [("o-2", "pending")]
    assert sandbox.dropped == [("o-1", "pending")]
    sandbox.set_switches(drop=True)
    sandbox.advance("o-2", "complete")
    assert sandbox.dropped[-1] == ("o-2", "complete") and len(sandbox.deliveries) == 1


def test_drop_rate_with_a_seed_is_reproducible(sandbox: ChangellySandbox) -> None:
    sandbox.create_order("o-1")

    def run() -> list[tuple[str, str]]:
        sandbox.set_switches(reset=True, drop_rate=0.5, seed=7)
        before = len(sandbox.dropped)
        for status in STATUSES * 3:
            sandbox.advance("o-1", status)
        return sandbox.dropped[before:]

    first = run()
    assert 0 < len(first) < len(STATUSES) * 3
    assert run() == first


def test_duplicate_delay_and_the_order_id_as_switch_key(sandbox: ChangellySandbox) -> None:
    order_id = sandbox.create_order("o-1")["orderId"]
    sandbox.set_switches(order_id, duplicate=2, delay=0.3)  # Changelly's id names the same order
    assert sandbox.switches["orders"] == {"o-1": {"duplicate": 2, "delay": 0.3}}
    started = time.monotonic()
    sandbox.advance("o-1", "pending")
    time.sleep(0.1)
    assert sandbox.deliveries == []
    assert delivered(sandbox) == [("o-1", "pending")] * 3
    assert time.monotonic() - started >= 0.3


def test_reorder_holds_until_flush_then_delivers_newest_first(sandbox: ChangellySandbox) -> None:
    sandbox.create_order("o-1")
    sandbox.set_switches(reorder=True)
    for status in ("pending", "hold", "complete"):
        sandbox.advance("o-1", status)
    assert sandbox.held == 3 and delivered(sandbox) == []
    assert sandbox.flush() == 3
    assert [s for _, s in delivered(sandbox)] == ["complete", "hold", "pending"]


def test_switches_are_checked(sandbox: ChangellySandbox) -> None:
    for bad in ({"rate_limit": -1}, {"rate_limit": 1.5}, {"nonsense": 1}, {"detail_fail": "yes"}):
        with pytest.raises(ValueError):
            sandbox.set_switches(**bad)
    with pytest.raises(ValueError, match="global"):
        sandbox.set_switches("o-1", rate_limit=1)
    assert sandbox.switches["global"]["rate_limit"] == 0


def test_detail_switches_per_order_leave_other_orders_alone(sandbox: ChangellySandbox) -> None:
    sandbox.create_order("o-1")
    sandbox.create_order("o-2")
    sandbox.set_switches("o-1", detail_fail=True)
    adapter = ChangellyAdapter(settings(sandbox.url))
    assert adapter.poll("o-2").provider_status == "created"
    with pytest.raises(Exception, match="HTTP 503"):
        adapter.poll("o-1")


# -- the API's edges


def test_unsigned_or_unknown_requests(sandbox: ChangellySandbox) -> None:
    bare = requests.get(sandbox.url + "/v1/orders", timeout=5)
    assert bare.status_code == 401 and bare.json()["errorType"] == "unauthorized"
    assert requests.get(sandbox.url + "/nowhere", timeout=5).status_code == 404
    with pytest.raises(ProviderRejected) as exc:
        client(sandbox).request("GET", "/v1/sell/orders")
    assert exc.value.status == 405


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ([("limit", "0")], 400),
        ([("limit", "101")], 400),
        ([("offset", "-1")], 400),
        ([("startDate", "yesterday")], 400),
        ([("walletAddress", "x")], 400),
        ([("orderId[0]", "nope")], 200),
        ([("status", "created"), ("limit", "100")], 200),
    ],
)
def test_list_query_is_validated(
    sandbox: ChangellySandbox, params: list[tuple[str, str]], status: int
) -> None:
    sandbox.create_order("o-1")
    try:
        answer = client(sandbox).request("GET", "/v1/orders", params=params)
    except ProviderRejected as exc:
        assert (exc.status, exc.code) == (status, "validation")
    else:
        assert status == 200
        expected = 0 if params[0][0] == "orderId[0]" else 1
        assert answer.data["total"] == expected


def test_autopilot_walks_the_statuses(sandbox: ChangellySandbox) -> None:
    sandbox.create_order("o-1")
    with pytest.raises(ValueError, match="unknown statuses"):
        sandbox.autopilot("o-1", ["pending", "paid"])
    sandbox.autopilot("o-1", ["pending", "complete"], interval=0.05).join(5)
    assert delivered(sandbox) == [("o-1", "pending"), ("o-1", "complete")]
    assert sandbox.truth() == {"o-1": "complete"}


def test_control_api_mirrors_the_python_api(sandbox: ChangellySandbox) -> None:
    base = sandbox.url + "/sandbox"
    created = requests.post(base + "/orders", json={"externalOrderId": "o-9", "amountFrom": "1"}, timeout=5)
    assert created.status_code == 200 and created.json()["status"] == "created"
    order_id = created.json()["orderId"]
    advanced = requests.post(f"{base}/orders/{order_id}/advance", json={"status": "pending"}, timeout=5)
    assert advanced.json()["status"] == "pending"
    assert requests.get(base + "/orders", timeout=5).json() == {"orders": {"o-9": "pending"}}
    assert requests.get(base + "/orders/o-9", timeout=5).json()["orderId"] == order_id
    assert requests.get(base + "/orders/none", timeout=5).status_code == 404
    assert (
        requests.post(base + "/switches", json={"rate_limit": 1}, timeout=5).json()["global"]["rate_limit"]
        == 1
    )
    pem = requests.get(base + "/public-key", timeout=5).json()["pem"]
    assert pem.encode() == sandbox.callback_public_key_pem
    assert pem.startswith("-----BEGIN RSA PUBLIC KEY-----")


def test_python_api_refuses_bad_orders_and_arguments(sandbox: ChangellySandbox) -> None:
    sandbox.create_order("o-1")
    with pytest.raises(ValueError, match="duplicate"):
        sandbox.create_order("o-1")
    with pytest.raises(ValueError):
        sandbox.create_order("o-2", amount_from="0")
    with pytest.raises(KeyError):
        sandbox.advance("o-none", "pending")
    with pytest.raises(ValueError):
        sandbox.advance("o-1", "paid")
    common: dict[str, Any] = {"api_key": API_KEY, "partner_public_key": keys().partner.public_key()}
    for kw in (
        {"host": "192.0.2.1"},
        {"response_shape": "xml"},
        {"callback_url": "https://example.com/hook"},
    ):
        with pytest.raises(ValueError):
            ChangellySandbox(**common, **kw)


def test_nothing_personal_is_logged(
    sandbox: ChangellySandbox, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = ChangellyAdapter(settings(sandbox.url))
    request = {
        "externalOrderId": "o-1",
        "externalUserId": "u-1",
        "providerCode": "moonpay",
        "currencyFrom": "BTC",
        "currencyTo": "EUR",
        "amountFrom": "0.01",
        "country": "DE",
        "ip": "198.51.100.23",
        "userAgent": "SecretAgent/9",
        "refundAddress": "bc1qprivaterefund",
    }
    adapter.submit_create(adapter.validate_create(request))
    sandbox.advance("o-1", "pending")
    assert sandbox.wait_idle(5)
    adapter.poll("o-1")
    text = caplog.text
    assert "o-1" in text  # ids are logged
    for secret in ("198.51.100.23", "SecretAgent", "bc1qprivaterefund", API_KEY):
        assert secret not in text


# -- CLI


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the sandbox printed nothing"
    return proc.stdout.readline().strip()


def test_cli_serves_stops_on_sigterm_and_keeps_its_callback_key(tmp_path: Path) -> None:
    partner_pem = tmp_path / "partner_public.pem"
    partner_pem.write_bytes(
        keys().partner.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    )
    key_dir = tmp_path / "keys"
    pems = []
    for run in range(2):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devkit.changelly",
                "--api-key",
                API_KEY,
                "--partner-public-key",
                str(partner_pem),
                "--callback-key-dir",
                str(key_dir),
                "--response-shape",
                "array",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            line = _read_line(proc, 10)
            assert line.startswith("changelly sandbox listening on http://127.0.0.1:"), line
            url = line.rsplit(" ", 1)[1]
            answer = ChangellyClient(settings(url)).request("GET", "/v1/orders", params=[("limit", "1")])
            assert answer.data == []  # the array shape, empty
            pems.append((key_dir / "callback_public.pem").read_bytes())
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
        assert run == len(pems) - 1
    assert pems[0] == pems[1] and pems[0].startswith(b"-----BEGIN RSA PUBLIC KEY-----")
    private = key_dir / "callback_private.pem"
    assert private.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert private.stat().st_mode & 0o077 == 0
