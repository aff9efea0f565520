"""The AliX sandbox and the real AlixPayClient, over real HTTP on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from recorders import CallbackRecorder

from config import Named
from devkit.alixpay.sandbox import AlixSandbox
from orders.errors import ProviderRejected, ProviderResponseInvalid, ProviderUnavailable
from orders.providers.alixpay import signing
from orders.providers.alixpay.client import AlixPayClient
from orders.providers.alixpay.settings import AlixPaySettings

PARTNER = "rampwatch-test"
SECRET = "partner-api-secret"
WEBHOOK = "partner-webhook-secret"
REPO = Path(__file__).resolve().parents[3]
BY_WEBHOOK = "ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY"
BY_SECRET = "ALIXPAY_PUBLIC_KEY+ALIXPAY_SECRET_KEY"


# -- fixtures


@pytest.fixture(scope="module")
def keys() -> SimpleNamespace:
    def gen() -> RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return SimpleNamespace(partner=gen(), alix=gen(), other=gen())


class Receiver(CallbackRecorder):
    """Records the IPNs the sandbox posts."""

    path = "/webhooks/alixpay"

    def statuses(self, order_id: str | None = None) -> list[str]:
        return [b["status"] for b in self.bodies() if order_id is None or b["externalOrderId"] == order_id]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture
def make_sandbox(keys: SimpleNamespace) -> Iterator[Callable[..., AlixSandbox]]:
    started: list[AlixSandbox] = []

    def make(**kw: Any) -> AlixSandbox:
        kw.setdefault("alix_private_key", keys.alix)
        sandbox = AlixSandbox(
            partner_code=PARTNER,
            secret_key=SECRET,
            webhook_secret_key=WEBHOOK,
            partner_public_key=keys.partner.public_key(),
            **kw,
        )
        started.append(sandbox.start())
        return sandbox

    yield make
    for sandbox in started:
        sandbox.stop()


def settings_for(
    keys: SimpleNamespace,
    base_url: str,
    *,
    private_key: RSAPrivateKey | None = None,
    public_keys: tuple[Named[RSAPublicKey], ...] | None = None,
    partner_code: str = PARTNER,
    secret: str = SECRET,
    timeout: float = 3.0,
) -> AlixPaySettings:
    return AlixPaySettings(
        partner_code=partner_code,
        secret_keys=(Named("ALIXPAY_SECRET_KEY", secret),),
        webhook_secret_keys=(Named("ALIXPAY_WEBHOOK_SECRET_KEY", WEBHOOK),),
        private_key=Named("ALIXPAY_PRIVATE_KEY", private_key or keys.partner),
        public_keys=public_keys or (Named("ALIXPAY_PUBLIC_KEY", keys.alix.public_key()),),
        base_url=base_url,
        timeout=timeout,
    )


def client_for(keys: SimpleNamespace, sandbox: AlixSandbox, **kw: Any) -> AlixPayClient:
    return AlixPayClient(settings_for(keys, sandbox.url, **kw))


def sell_order(order_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "externalOrderId": order_id,
        "currency": "USDT",
        "amount": 4.0,
        "fiatAmount": 100000.0,
        "network": "TRC20",
        "bankCode": "VCB",
        "bankAccountNumber": "0123456789",
        "bankAccountName": "NGUYEN VAN A",
        "fiatCurrency": "VND",
        **extra,
    }


def cashout_order(order_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "externalOrderId": order_id,
        "cryptoCurrency": "USDT",
        "userEmail": "dummy@example.com",
        "fiatAmount": 60000,
        "fiatCurrency": "VND",
        "extendInfo": {
            "transferContent": "transfer",
            "recipientName": "NGUYEN VAN A",
            "recipientNumber": "888812345678",
            "recipientBankCode": "TECHCOMBANK",
            "recipientType": "",
        },
        **extra,
    }


def verify_ipn(keys: SimpleNamespace, body: dict[str, Any]) -> str | None:
    return signing.verify(
        signing.response_fields(body),
        body["signature"],
        [Named("ALIXPAY_PUBLIC_KEY", keys.alix.public_key())],
        [Named("ALIXPAY_SECRET_KEY", SECRET), Named("ALIXPAY_WEBHOOK_SECRET_KEY", WEBHOOK)],
    )


# -- client against the sandbox


def test_create_sell_order_answers_a_signed_order_and_sends_no_ipn(keys, make_sandbox, receiver):
    sandbox = make_sandbox(callback_url=receiver.url)
    answer = client_for(keys, sandbox).create_sell_order(sell_order("sell-1"))

    assert answer.verified_by == BY_WEBHOOK
    assert answer.body["status"] == "AWAITING_PAYMENT"
    assert answer.body["type"] == "sell"
    assert answer.body["fiatAmount"] == 100000
    assert answer.body["bankTransfer"]["bankAccountNumber"] == "0123456789"
    assert '"success"' not in answer.raw
    assert sandbox.truth() == {"sell-1": "AWAITING_PAYMENT"}
    assert sandbox.wait_idle(2)
    assert receiver.posts == []
    assert sandbox.deliveries == []


def test_ipn_secret_secret_signs_with_the_partner_secret(keys, make_sandbox):
    sandbox = make_sandbox(ipn_secret="secret")
    answer = client_for(keys, sandbox).create_sell_order(sell_order("sell-2"))
    assert answer.verified_by == BY_SECRET


def test_create_cashout(keys, make_sandbox):
    sandbox = make_sandbox()
    answer = client_for(keys, sandbox).create_cashout(cashout_order("co-1"))

    assert answer.verified_by == BY_WEBHOOK
    assert answer.body["type"] == "cashout"
    assert answer.body["status"] == "AWAITING_PAYMENT"
    assert answer.body["bankTransfer"]["bankAccountNumber"] == "888812345678"
    assert answer.body["tokenTransfer"]["currency"] == "USDT"
    assert sandbox.order("co-1")["fiatAmount"] == 60000


def test_cashout_signature_covers_extend_info(keys, make_sandbox):
    """The sandbox checks the cash-out string field by field: a request whose
    signed recipientNumber differs from the one sent is refused."""
    sandbox = make_sandbox()
    settings = settings_for(keys, sandbox.url)
    body = {"partnerCode": PARTNER, **cashout_order("co-2"), "webhookSecretKey": WEBHOOK}
    fields = [PARTNER, "co-2", "USDT", 60000, "TECHCOMBANK", "999999999999", "transfer", "dummy@example.com"]
    body["signature"] = signing.sign(fields, SECRET, settings.private_key.value)
    resp = requests.post(sandbox.url + "/api/v2/orders/create-cashout", json=body, timeout=5)
    assert resp.status_code == 400
    assert resp.json() == {"error": "Invalid request"}
    fields[5] = "888812345678"
    body["signature"] = signing.sign(fields, SECRET, settings.private_key.value)
    resp = requests.post(sandbox.url + "/api/v2/orders/create-cashout", json=body, timeout=5)
    assert resp.status_code == 200
    assert resp.json()["externalOrderId"] == "co-2"


def test_cashout_below_the_sandbox_minimum_is_refused(keys, make_sandbox):
    sandbox = make_sandbox()
    with pytest.raises(ProviderRejected) as info:
        client_for(keys, sandbox).create_cashout(cashout_order("co-small", fiatAmount=20000))
    assert info.value.status == 400
    assert sandbox.truth() == {}


@pytest.mark.parametrize("envelope", [False, True])
def test_order_details(keys, make_sandbox, envelope):
    sandbox = make_sandbox(envelope=envelope)
    sandbox.create_order("det-1", 250000)
    sandbox.advance("det-1", "PAYMENT_COMPLETED")

    answer = client_for(keys, sandbox).order_details("det-1")

    assert answer.verified_by == BY_WEBHOOK
    assert answer.body["externalOrderId"] == "det-1"
    assert answer.body["status"] == "PAYMENT_COMPLETED"
    assert answer.body["paidAmount"] == 250000
    assert ('"success":true' in answer.raw) is envelope
    assert "signature" not in sandbox.order("det-1")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"private_key": "other"}, id="wrong-private-key"),
        pytest.param({"secret": "not-the-secret"}, id="wrong-secret"),
        pytest.param({"partner_code": "someone-else"}, id="unknown-partner"),
    ],
)
@pytest.mark.parametrize("envelope", [False, True])
def test_badly_signed_requests_are_refused(keys, make_sandbox, bad, envelope):
    sandbox = make_sandbox(envelope=envelope)
    sandbox.create_order("known", 100000)
    kw = {**bad, "private_key": keys.other} if "private_key" in bad else bad
    client = client_for(keys, sandbox, **kw)

    with pytest.raises(ProviderRejected) as info:
        client.create_sell_order(sell_order("bad-1"))
    assert info.value.status == 400
    with pytest.raises(ProviderRejected):
        client.order_details("known")
    assert sandbox.truth() == {"known": "AWAITING_PAYMENT"}


def test_duplicate_and_incomplete_orders_are_refused(keys, make_sandbox):
    sandbox = make_sandbox()
    client = client_for(keys, sandbox)
    client.create_sell_order(sell_order("dup-1"))
    with pytest.raises(ProviderRejected):
        client.create_sell_order(sell_order("dup-1", fiatAmount=5))
    order = sell_order("no-name")
    del order["bankAccountName"]
    with pytest.raises(ProviderRejected):
        client.create_sell_order(order)
    assert sandbox.truth() == {"dup-1": "AWAITING_PAYMENT"}
    assert sandbox.order("dup-1")["fiatAmount"] == 100000


def test_unknown_order_is_rejected(keys, make_sandbox):
    sandbox = make_sandbox()
    with pytest.raises(ProviderRejected) as info:
        client_for(keys, sandbox).order_details("nope")
    assert info.value.status == 400


def test_detail_fail_is_unavailable(keys, make_sandbox):
    sandbox = make_sandbox()
    sandbox.create_order("fail-1", 100000)
    sandbox.set_switches(detail_fail=True)
    with pytest.raises(ProviderUnavailable) as info:
        client_for(keys, sandbox).order_details("fail-1")
    assert info.value.status == 503
    sandbox.set_switches(detail_fail=False)
    assert client_for(keys, sandbox).order_details("fail-1").body["status"] == "AWAITING_PAYMENT"


def test_detail_delay_beyond_the_client_timeout_is_unavailable(keys, make_sandbox):
    sandbox = make_sandbox()
    sandbox.create_order("slow-1", 100000)
    sandbox.set_switches(order_id="slow-1", detail_delay=1.5)
    client = client_for(keys, sandbox, timeout=0.3)

    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="timed out"):
        client.order_details("slow-1")
    assert time.monotonic() - started < 1.2
    sandbox.set_switches(order_id="slow-1", detail_delay=None)
    assert client.order_details("slow-1").body["status"] == "AWAITING_PAYMENT"


def test_response_signed_by_another_alix_key_is_invalid(keys, make_sandbox):
    sandbox = make_sandbox(alix_private_key=keys.other)
    sandbox.create_order("forged-1", 100000)
    assert sandbox.alix_public_key_pem == keys.other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ProviderResponseInvalid):
        client_for(keys, sandbox).order_details("forged-1")


def test_a_previous_alix_public_key_still_verifies(keys, make_sandbox):
    sandbox = make_sandbox()
    sandbox.create_order("rot-1", 100000)
    public_keys = (
        Named("ALIXPAY_PUBLIC_KEY", keys.other.public_key()),
        Named("ALIXPAY_PUBLIC_KEY_PREVIOUS", keys.alix.public_key()),
    )
    answer = client_for(keys, sandbox, public_keys=public_keys).order_details("rot-1")
    assert answer.verified_by == "ALIXPAY_PUBLIC_KEY_PREVIOUS+ALIXPAY_WEBHOOK_SECRET_KEY"


def test_generated_alix_key_is_exposed(keys):
    sandbox = AlixSandbox(
        partner_code=PARTNER,
        secret_key=SECRET,
        webhook_secret_key=WEBHOOK,
        partner_public_key=keys.partner.public_key(),
    )
    with sandbox:
        sandbox.create_order("gen-1", 100000)
        public = serialization.load_pem_public_key(sandbox.alix_public_key_pem)
        assert isinstance(public, RSAPublicKey)
        assert public.key_size == 2048
        answer = client_for(keys, sandbox, public_keys=(Named("ALIXPAY_PUBLIC_KEY", public),)).order_details(
            "gen-1"
        )
        assert answer.verified_by == BY_WEBHOOK


def test_only_loopback_is_served_or_called(keys):
    common = {
        "partner_code": PARTNER,
        "secret_key": SECRET,
        "webhook_secret_key": WEBHOOK,
        "partner_public_key": keys.partner.public_key(),
        "alix_private_key": keys.alix,
    }
    with pytest.raises(ValueError, match="loopback"):
        AlixSandbox(host="192.0.2.1", **common)
    with pytest.raises(ValueError, match="loopback"):
        AlixSandbox(callback_url="http://example.com/hook", **common)
    with pytest.raises(ValueError, match="ipn_secret"):
        AlixSandbox(ipn_secret="both", **common)
    assert (
        AlixSandbox(callback_url="http://localhost:1/hook", **common).callback_url
        == "http://localhost:1/hook"
    )


# -- IPNs


def test_advance_sends_one_signed_ipn(keys, make_sandbox, receiver):
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.create_order("ipn-1", 100000)
    sandbox.advance("ipn-1", "PAYMENT_COMPLETED")
    assert sandbox.wait_idle(3)

    assert len(receiver.posts) == 1
    post = receiver.posts[0]
    assert post["headers"]["Content-Type"] == "application/json"
    assert b": " not in post["raw"]  # compact JSON
    body = json.loads(post["raw"])
    assert body["externalOrderId"] == "ipn-1"
    assert body["status"] == "PAYMENT_COMPLETED"
    assert verify_ipn(keys, body) == BY_WEBHOOK
    assert sandbox.deliveries == [("ipn-1", "PAYMENT_COMPLETED", 200)]


def test_ipn_signature_uses_the_order_webhook_secret(keys, make_sandbox, receiver):
    """With ipn_secret="webhook" the string ends with the webhookSecretKey the order
    was created with; tampering with a signed field breaks it."""
    sandbox = make_sandbox(callback_url=receiver.url)
    client_for(keys, sandbox).create_sell_order(sell_order("ipn-2"))
    sandbox.advance("ipn-2", "SUCCESS")
    assert sandbox.wait_idle(3)
    (body,) = receiver.bodies()
    only_webhook = [Named("W", WEBHOOK)]
    assert signing.verify(
        signing.response_fields(body), body["signature"], [Named("K", keys.alix.public_key())], only_webhook
    )
    body["fiatAmount"] = 1
    assert verify_ipn(keys, body) is None


def test_drop_sends_nothing_but_the_status_changes(keys, make_sandbox, receiver):
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.create_order("drop-1", 100000)
    sandbox.set_switches(drop=True)
    sandbox.advance("drop-1", "SUCCESS")
    assert sandbox.wait_idle(3)

    assert receiver.posts == []
    assert sandbox.deliveries == []
    assert sandbox.dropped == [("drop-1", "SUCCESS")]
    assert sandbox.truth() == {"drop-1": "SUCCESS"}
    assert client_for(keys, sandbox).order_details("drop-1").body["status"] == "SUCCESS"


def test_duplicate_sends_extra_copies(keys, make_sandbox, receiver):
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.create_order("dup-ipn", 100000)
    sandbox.set_switches(duplicate=2)
    sandbox.advance("dup-ipn", "PAYMENT_COMPLETED")
    assert sandbox.wait_idle(3)

    assert len(receiver.posts) == 3
    assert len({p["raw"] for p in receiver.posts}) == 1
    assert sandbox.deliveries == [("dup-ipn", "PAYMENT_COMPLETED", 200)] * 3


def test_reorder_holds_until_flush_then_delivers_newest_first(keys, make_sandbox, receiver):
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.create_order("ro-1", 100000)
    sandbox.set_switches(reorder=True)
    for status in ("PAYMENT_COMPLETED", "PROCESSING_TOKEN_TRANSFER", "SUCCESS"):
        sandbox.advance("ro-1", status)
    assert sandbox.wait_idle(3)
    assert receiver.posts == []
    assert sandbox.held == 3

    assert sandbox.flush() == 3
    assert sandbox.wait_idle(3)
    assert receiver.statuses("ro-1") == ["SUCCESS", "PROCESSING_TOKEN_TRANSFER", "PAYMENT_COMPLETED"]
    assert all(verify_ipn(keys, b) == BY_WEBHOOK for b in receiver.bodies())
    assert sandbox.held == 0
    assert sandbox.flush() == 0


def test_delay_delivers_later(keys, make_sandbox, receiver):
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.create_order("late-1", 100000)
    sandbox.set_switches(delay=0.4)
    advanced_at = time.monotonic()
    sandbox.advance("late-1", "PAYMENT_COMPLETED")
    assert receiver.posts == []
    assert not sandbox.wait_idle(0.1)

    assert sandbox.wait_idle(3)
    assert receiver.statuses() == ["PAYMENT_COMPLETED"]
    assert receiver.posts[0]["at"] - advanced_at >= 0.4


def test_per_order_switch_overrides_global(keys, make_sandbox, receiver):
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.create_order("a", 100000)
    sandbox.create_order("b", 100000)
    sandbox.set_switches(drop=True)
    switches = sandbox.set_switches(order_id="b", drop=False)
    assert switches == {
        "global": {**switches["global"], "drop": True},
        "orders": {"b": {"drop": False}},
    }
    sandbox.advance("a", "SUCCESS")
    sandbox.advance("b", "SUCCESS")
    assert sandbox.wait_idle(3)

    assert [b["externalOrderId"] for b in receiver.bodies()] == ["b"]
    assert sandbox.truth() == {"a": "SUCCESS", "b": "SUCCESS"}


def test_drop_rate_is_deterministic_with_a_seed(keys, make_sandbox):
    sandbox = make_sandbox(callback_url="http://127.0.0.1:9/unused")
    sandbox.create_order("rate-1", 100000)
    sandbox.set_switches(drop=False, delay=600.0)  # nothing is actually POSTed

    def run() -> list[bool]:
        sandbox.set_switches(drop_rate=0.5, seed=1234)
        pattern = []
        for _ in range(20):
            before = len(sandbox.dropped)
            sandbox.advance("rate-1", "PAYMENT_COMPLETED")
            pattern.append(len(sandbox.dropped) > before)
        return pattern

    first, second = run(), run()
    assert first == second
    assert 0 < sum(first) < 20


def test_bad_switches_are_refused_and_change_nothing(make_sandbox):
    sandbox = make_sandbox()
    before = sandbox.switches
    with pytest.raises(ValueError, match="unknown"):
        sandbox.set_switches(drop=True, explode=True)
    with pytest.raises(ValueError):
        sandbox.set_switches(drop_rate=1.5)
    with pytest.raises(ValueError):
        sandbox.set_switches(order_id="x", seed=1)
    assert sandbox.switches == before


def test_failed_delivery_is_recorded_not_raised(keys, make_sandbox):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    sandbox = make_sandbox(callback_url=f"http://127.0.0.1:{closed_port}/hook")
    sandbox.create_order("down-1", 100000)
    sandbox.advance("down-1", "SUCCESS")
    assert sandbox.wait_idle(6)
    ((order_id, status, outcome),) = sandbox.deliveries
    assert (order_id, status) == ("down-1", "SUCCESS")
    assert outcome == "ConnectionError"
    sandbox.advance("down-1", "ERROR")  # the worker survived
    assert sandbox.wait_idle(6)
    assert len(sandbox.deliveries) == 2


def test_autopilot_walks_the_statuses(keys, make_sandbox, receiver):
    sandbox = make_sandbox(callback_url=receiver.url)
    sandbox.create_order("auto-1", 100000)
    thread = sandbox.autopilot("auto-1", ["PAYMENT_COMPLETED", "PROCESSING_TOKEN_TRANSFER", "SUCCESS"], 0.05)
    thread.join(5)
    assert not thread.is_alive()
    assert sandbox.wait_idle(3)
    assert receiver.statuses("auto-1") == ["PAYMENT_COMPLETED", "PROCESSING_TOKEN_TRANSFER", "SUCCESS"]
    assert sandbox.truth() == {"auto-1": "SUCCESS"}
    with pytest.raises(ValueError):
        sandbox.autopilot("auto-1", ["DONE"], 0.05)


# -- control API over HTTP


def test_control_api(keys, make_sandbox, receiver):
    sandbox = make_sandbox(callback_url=receiver.url)
    base = sandbox.url + "/sandbox"

    created = requests.post(
        base + "/orders", json={"externalOrderId": "ctl-1", "fiatAmount": 70000}, timeout=5
    )
    assert created.status_code == 200
    assert created.json()["status"] == "AWAITING_PAYMENT"
    assert "signature" not in created.json()
    dup = requests.post(base + "/orders", json={"externalOrderId": "ctl-1", "fiatAmount": 1}, timeout=5)
    assert dup.status_code == 400

    switched = requests.post(base + "/switches", json={"order_id": "ctl-1", "reorder": True}, timeout=5)
    assert switched.json()["orders"] == {"ctl-1": {"reorder": True}}
    assert requests.post(base + "/switches", json={"nope": 1}, timeout=5).status_code == 400

    for status in ("PAYMENT_COMPLETED", "SUCCESS"):
        moved = requests.post(base + "/orders/ctl-1/advance", json={"status": status}, timeout=5)
        assert moved.status_code == 200
        assert moved.json()["status"] == status
    assert (
        requests.post(base + "/orders/ctl-1/advance", json={"status": "DONE"}, timeout=5).status_code == 400
    )
    assert (
        requests.post(base + "/orders/ghost/advance", json={"status": "SUCCESS"}, timeout=5).status_code
        == 404
    )
    assert requests.get(base + "/orders/ghost", timeout=5).status_code == 404
    assert requests.get(base + "/orders/ctl-1", timeout=5).json()["status"] == "SUCCESS"
    assert requests.get(base + "/orders", timeout=5).json() == {"orders": {"ctl-1": "SUCCESS"}}

    assert requests.post(base + "/flush", timeout=5).json() == {"flushed": 2}
    assert sandbox.wait_idle(3)
    assert receiver.statuses() == ["SUCCESS", "PAYMENT_COMPLETED"]
    report = requests.get(base + "/deliveries", timeout=5).json()
    assert report["deliveries"] == [["ctl-1", "SUCCESS", 200], ["ctl-1", "PAYMENT_COMPLETED", 200]]
    assert report["pending"] == 0
    assert requests.get(base + "/public-key", timeout=5).json()["pem"].encode() == sandbox.alix_public_key_pem
    assert requests.get(sandbox.url + "/nowhere", timeout=5).status_code == 404
    assert requests.get(sandbox.url + "/api/v2/orders/details", timeout=5).status_code == 405


# -- CLI


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the sandbox printed nothing"
    return proc.stdout.readline().strip()


def _run_cli(tmp_path: Path, partner_pem: Path, key_dir: Path) -> tuple[subprocess.Popen[str], str]:
    stderr = (tmp_path / "stderr.log").open("a")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devkit.alixpay",
            "--port",
            "0",
            "--partner-code",
            PARTNER,
            "--secret-key",
            SECRET,
            "--webhook-secret-key",
            WEBHOOK,
            "--partner-public-key",
            str(partner_pem),
            "--alix-key-dir",
            str(key_dir),
            "--envelope",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    stderr.close()
    try:
        line = _read_line(proc, 10)
    except BaseException:
        proc.kill()
        proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()
        raise
    assert line.startswith("alixpay sandbox listening on http://127.0.0.1:"), line
    return proc, line.rsplit(" ", 1)[1]


def test_cli_serves_stops_on_sigterm_and_keeps_its_key(keys, tmp_path):
    partner_pem = tmp_path / "partner_public.pem"
    partner_pem.write_bytes(
        keys.partner.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    key_dir = tmp_path / "alix"
    pems = []
    for run in range(2):
        proc, url = _run_cli(tmp_path, partner_pem, key_dir)
        try:
            pems.append((key_dir / "alix_public.pem").read_bytes())
            alix_public = serialization.load_pem_public_key(pems[-1])
            client = AlixPayClient(
                settings_for(keys, url, public_keys=(Named("ALIXPAY_PUBLIC_KEY", alix_public),))
            )
            answer = client.create_sell_order(sell_order(f"cli-{run}"))
            assert answer.verified_by == BY_WEBHOOK
            assert '"success":true' in answer.raw
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
    assert pems[0] == pems[1]
    assert (key_dir / "alix_private.pem").stat().st_mode & 0o077 == 0
