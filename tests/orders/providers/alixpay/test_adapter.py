"""The AliX adapter: IPN -> Event, order object -> Event, and answers about another order."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import WEBHOOK_SECRET, Keys, alix_settings

from orders.errors import InvalidPayload, ProviderResponseInvalid, SignatureInvalid
from orders.providers.alixpay import signing
from orders.providers.alixpay.adapter import AlixPayAdapter, validate_create

NOW = datetime(2026, 11, 21, tzinfo=UTC)


def signed(keys: Keys, **body):
    body.setdefault("type", "sell")
    body["signature"] = signing.sign(signing.response_fields(body), WEBHOOK_SECRET, keys.alix.private)
    return body


def test_ipn_event_carries_only_what_is_signed(keys: Keys) -> None:
    adapter = AlixPayAdapter(alix_settings(keys, "http://127.0.0.1:9"))
    body = signed(
        keys,
        externalOrderId="o-1",
        fiatAmount=1e6,
        status="SUCCESS",
        tokenTransfer={"txHash": "0xdead", "walletAddress": "T..."},
    )
    raw = json.dumps(body).encode()
    event = adapter.parse_callback(raw, {}, NOW)
    assert (event.external_order_id, event.provider_status, event.fiat_amount) == (
        "o-1",
        "SUCCESS",
        "1000000",
    )
    assert event.details == {} and event.crypto_amount is None
    assert event.raw_body == raw.decode() and event.received_at == NOW.isoformat()
    with pytest.raises(SignatureInvalid):
        adapter.parse_callback(raw.replace(b"SUCCESS", b"ERROR"), {}, NOW)
    with pytest.raises(InvalidPayload) as exc:
        adapter.parse_callback(json.dumps({"signature": "x"}).encode(), {}, NOW)
    assert exc.value.fields == ["externalOrderId", "fiatAmount", "status", "type"]
    assert adapter.order_hint(raw) == "o-1"
    assert adapter.order_hint(b"nonsense") is None


def test_poll_event_takes_details_from_the_signed_answer(keys: Keys) -> None:
    order = signed(
        keys,
        externalOrderId="o-2",
        fiatAmount=250000,
        status="PROCESSING_TOKEN_TRANSFER",
        tokenTransfer={
            "currency": "USDT",
            "network": "TRC20",
            "amount": 9.5,
            "txHash": "0xabc",
            "address": "T1",
        },
        descriptions="moving",
        expiresAt="2026-11-22T00:00:00Z",
    )
    event = AlixPayAdapter.event_from_order(order, json.dumps(order), "K", "poll", NOW)
    assert event.crypto_amount == "9.5" and event.crypto_currency == "USDT"
    assert event.details == {
        "tx_hash": "0xabc",
        "wallet_address": "T1",
        "network": "TRC20",
        "description": "moving",
        "expires_at": "2026-11-22T00:00:00Z",
    }


class _OtherOrder(BaseHTTPRequestHandler):
    body = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_signed_answer_about_another_order_is_refused(keys: Keys) -> None:
    _OtherOrder.body = json.dumps(
        signed(keys, externalOrderId="someone-else", fiatAmount=1, status="SUCCESS")
    ).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherOrder)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        adapter = AlixPayAdapter(alix_settings(keys, f"http://127.0.0.1:{server.server_port}", timeout=2))
        with pytest.raises(ProviderResponseInvalid, match="another order"):
            adapter.poll("mine")
    finally:
        server.shutdown()


def test_create_requests_are_validated() -> None:
    ok = validate_create(
        {
            "externalOrderId": "c-1",
            "currency": "USDT",
            "network": "TRC20",
            "fiatAmount": 100000,
            "bankCode": "VCB",
            "bankAccountNumber": "1",
            "bankAccountName": "A",
        }
    )
    assert ok["paymentMethod"] == "bank" and ok["fiatCurrency"] == "VND" and ok["kind"] == "sell"
    with pytest.raises(InvalidPayload) as exc:
        validate_create({"kind": "cashout", "externalOrderId": "c-2", "fiatAmount": 1, "userEmail": "nope"})
    assert exc.value.fields == ["cryptoCurrency", "extendInfo", "userEmail"]
    with pytest.raises(InvalidPayload) as exc:
        validate_create({"externalOrderId": "c-3", "surprise": 1})
    assert "surprise" in exc.value.fields
