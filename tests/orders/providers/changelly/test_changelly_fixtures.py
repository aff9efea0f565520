"""One test per file in tests/fixtures/changelly, named after it.

The fixtures are the documented payload shapes, fixed where the docs are broken:
* ``sell_order_response.json``: the seed's (S3) create-sell-order sample as is
  (``amountFrom`` a number, doc bug C-2).
* ``sell_order_response_swapped_ids.json``: the same with externalOrderId and
  externalUserId swapped, as one doc sample has them (C-3): must be refused.
* ``callback.json``: docs/providers.md 3.3's callback sample; its truncated
  ``transactionHash`` ("f418…") completed to 64 hex digits. ``createdAt`` without
  a timezone (C-8) is kept: it is data we never parse.
* ``orders_object.json`` / ``orders_array.json``: ``GET /v1/orders`` in the
  schema's object shape and the sample's top-level-array shape (C-6), built
  from the documented order fields (the docs give no complete sample).
* ``error_limits.json``: the seed's BadRequest ``limits`` example.

Signatures are made at test time with the code that verifies them; every answer
is served over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from changelly_support import FIXTURES, Canned, fixture, fixture_bytes, keys, settings

from orders.errors import ProviderRejected, ProviderResponseInvalid
from orders.providers.changelly import signing
from orders.providers.changelly.adapter import ChangellyAdapter

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
TESTED = {
    "sell_order_response.json",
    "sell_order_response_swapped_ids.json",
    "callback.json",
    "orders_object.json",
    "orders_array.json",
    "error_limits.json",
}


@pytest.fixture
def canned() -> Iterator[Canned]:
    server = Canned()
    yield server
    server.close()


def adapter_for(canned: Canned) -> ChangellyAdapter:
    return ChangellyAdapter(settings(canned.base), clock=lambda: NOW)


def sell_request(external_order_id: str, external_user_id: str) -> dict:
    return {
        "externalOrderId": external_order_id,
        "externalUserId": external_user_id,
        "providerCode": "moonpay",
        "currencyFrom": "BTC",
        "currencyTo": "EUR",
        "amountFrom": 0.002,
        "country": "IT",
        "paymentMethod": "card",
    }


def assert_signed_as_sent(canned: Canned) -> None:
    (sent,) = canned.requests
    url = canned.base + sent["target"]
    body = sent["raw"] or None
    assert sent["headers"]["X-Api-Key"] == "changelly-test-api-key"
    assert signing.verify_request(url, body, sent["headers"]["X-Api-Signature"], keys().partner.public_key())


def test_every_fixture_has_its_test() -> None:
    assert {p.name for p in FIXTURES.glob("*.json")} == TESTED


def test_sell_order_response(canned: Canned) -> None:
    canned.reply = (200, fixture_bytes("sell_order_response.json"), {})
    adapter = adapter_for(canned)
    event = adapter.submit_create(adapter.validate_create(sell_request("71ahw34", "122hd")))
    assert (event.source, event.provider_status, event.dedup_key) == ("create", None, "create:answer")
    assert event.external_order_id == "71ahw34"
    assert event.provider_order_id == "b38b83f0-1c76-4356-8ed5-60c1fcb2870c"
    assert event.details["redirect_url"] == fixture("sell_order_response.json")["redirectUrl"]
    assert event.raw_body == fixture_bytes("sell_order_response.json").decode()
    assert_signed_as_sent(canned)
    # The number asked for went out as a string (doc bug C-2), compact, in our order.
    assert canned.requests[0]["raw"].startswith(b'{"externalOrderId":"71ahw34","externalUserId":"122hd"')
    assert b'"amountFrom":"0.002"' in canned.requests[0]["raw"]


def test_sell_order_response_swapped_ids(canned: Canned) -> None:
    canned.reply = (200, fixture_bytes("sell_order_response_swapped_ids.json"), {})
    adapter = adapter_for(canned)
    with pytest.raises(ProviderResponseInvalid, match="externalOrderId"):
        adapter.submit_create(adapter.validate_create(sell_request("test_order", "test_user")))


def test_callback() -> None:
    raw = fixture_bytes("callback.json")
    adapter = ChangellyAdapter(settings("http://127.0.0.1:9"))
    headers = {"x-callback-signature": signing.sign_callback("5154302e-3stl-75p4", keys().callback)}
    event = adapter.parse_callback(raw, headers, NOW)
    assert (event.source, event.provider_status) == ("callback", None)
    # externalOrderId ("71ahw34" here) is not signed: the worker resolves the order by orderId.
    assert (event.provider_order_id, event.external_order_id) == ("5154302e-3stl-75p4", "")
    assert event.claimed_status == "pending" and event.details == {}
    assert event.verified_by == "CHANGELLY_CALLBACK_PUBLIC_KEY"
    assert event.fiat_amount is None and event.crypto_amount is None and event.kind is None
    assert event.raw_body == raw.decode() and event.received_at == NOW.isoformat()


def test_orders_object(canned: Canned) -> None:
    canned.reply = (200, fixture_bytes("orders_object.json"), {})
    event = adapter_for(canned).poll("71ahw34", provider_order_id="b38b83f0-1c76-4356-8ed5-60c1fcb2870c")
    assert canned.requests[0]["target"] == "/v1/orders?orderId=b38b83f0-1c76-4356-8ed5-60c1fcb2870c"
    assert_signed_as_sent(canned)
    assert (event.source, event.provider_status, event.dedup_key) == ("poll", "pending", "status:pending")
    assert (event.external_order_id, event.kind) == ("71ahw34", "sell")
    assert (event.crypto_amount, event.crypto_currency) == ("0.002", "BTC")
    assert (event.fiat_amount, event.fiat_currency) == (None, "EUR")  # payout final only once complete
    assert event.details["tx_hash"].startswith("9f2c6a1e")
    assert event.verified_by == "CHANGELLY_API_KEY:request"
    # Personal data stays in the raw body only.
    assert set(event.details) == {"tx_hash", "redirect_url", "provider_created_at"}


def test_orders_array(canned: Canned) -> None:
    canned.reply = (200, fixture_bytes("orders_array.json"), {})
    event = adapter_for(canned).poll("71ahw34")
    assert canned.requests[0]["target"] == "/v1/orders?externalOrderId=71ahw34"
    assert_signed_as_sent(canned)
    assert (event.provider_status, event.provider_order_id) == (
        "complete",
        "b38b83f0-1c76-4356-8ed5-60c1fcb2870c",
    )
    assert (event.kind, event.crypto_amount, event.fiat_amount) == ("sell", "0.002", "117.6")


def test_error_limits(canned: Canned) -> None:
    canned.reply = (400, fixture_bytes("error_limits.json"), {})
    adapter = adapter_for(canned)
    with pytest.raises(ProviderRejected) as exc:
        adapter.submit_create(adapter.validate_create(sell_request("o-1", "u-1")))
    assert (exc.value.status, exc.value.code) == (400, "limits")
    assert "limits: Limits error (min=20)" in str(exc.value)
