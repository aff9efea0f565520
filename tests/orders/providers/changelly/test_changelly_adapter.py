"""The Changelly adapter: callbacks as triggers, order objects -> poll Events, creation requests."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from changelly_support import Canned, fixture, keys, settings

from orders.errors import InvalidPayload, ProviderRejected, ProviderResponseInvalid, SignatureInvalid
from orders.providers.base import ProviderAdapter
from orders.providers.changelly import signing
from orders.providers.changelly.adapter import (
    ChangellyAdapter,
    creation_event,
    iso_utc,
    looks_like_sell,
    validate_create,
)
from orders.providers.changelly.statuses import STATUS_MAP

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def adapter() -> ChangellyAdapter:
    return ChangellyAdapter(settings("http://127.0.0.1:9"), clock=lambda: NOW)


@pytest.fixture
def canned() -> Iterator[Canned]:
    server = Canned()
    yield server
    server.close()


def callback(order_id: str = "ord-1", key: Any = None, **body: Any) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps({"orderId": order_id, **body}).encode()
    sig = signing.sign_callback(order_id, key or keys().callback)
    return raw, {"X-Callback-Signature": sig}


def sell(**extra: Any) -> dict[str, Any]:
    request = {
        "externalOrderId": "o-1",
        "externalUserId": "u-1",
        "providerCode": "moonpay",
        "currencyFrom": "BTC",
        "currencyTo": "EUR",
        "amountFrom": "0.01",
        "country": "DE",
    }
    request.update(extra)
    return request


# -- the contract


def test_adapter_meets_the_provider_contract(adapter: ChangellyAdapter) -> None:
    assert isinstance(adapter, ProviderAdapter)
    assert (adapter.slug, adapter.status_map, adapter.callbacks_are_triggers) == (
        "changelly",
        STATUS_MAP,
        True,
    )
    for name in ("parse_callback", "poll", "order_hint"):
        expected = list(inspect.signature(getattr(ProviderAdapter, name)).parameters)[1:]
        assert list(inspect.signature(getattr(adapter, name)).parameters) == expected, name


# -- callbacks


def test_callback_is_a_trigger_whose_claimed_status_is_never_applied(adapter: ChangellyAdapter) -> None:
    raw, headers = callback(externalOrderId="o-1", status="complete", payoutAmount="999")
    event = adapter.parse_callback(raw, headers, NOW)
    assert event.provider_status is None and event.source == "callback"
    assert event.claimed_status == "complete" and event.details == {}
    assert event.covers == ("provider_order_id",)
    assert event.fiat_amount is None and event.crypto_amount is None
    assert event.dedup_key == "callback:" + hashlib.sha256(raw).hexdigest()[:32]
    # The status is unsigned: a tampered body still verifies, and still applies nothing.
    tampered = raw.replace(b"complete", b"refunded")
    other = adapter.parse_callback(tampered, headers, NOW)
    assert other.provider_status is None and other.claimed_status == "refunded"
    # Bodies that differ in what the signature does not cover are one delivery.
    noisy = adapter.parse_callback(raw.replace(b"999", b"1999"), headers, NOW)
    assert noisy.fingerprint() == event.fingerprint() != other.fingerprint()
    # A claim that is not one of Changelly's statuses is not kept (the raw body has it).
    odd = adapter.parse_callback(raw.replace(b"complete", b"x" * 20), headers, NOW)
    assert odd.claimed_status is None and odd.fingerprint() != event.fingerprint()
    assert other.dedup_key != event.dedup_key


def test_callback_verified_by_the_previous_key_names_it(adapter: ChangellyAdapter) -> None:
    raw, headers = callback(key=keys().callback_old, externalOrderId="o-1")
    assert adapter.parse_callback(raw, headers, NOW).verified_by == "CHANGELLY_CALLBACK_PUBLIC_KEY_PREVIOUS"
    raw, headers = callback(key=keys().other, externalOrderId="o-1")
    with pytest.raises(SignatureInvalid):
        adapter.parse_callback(raw, headers, NOW)


def test_callback_signature_for_another_order_is_refused(adapter: ChangellyAdapter) -> None:
    _, headers = callback("ord-1")
    raw, _ = callback("ord-2", externalOrderId="o-1")
    with pytest.raises(SignatureInvalid):
        adapter.parse_callback(raw, headers, NOW)


def test_callback_header_is_found_in_any_case(adapter: ChangellyAdapter) -> None:
    raw, headers = callback(externalOrderId="o-1")
    lower = {"x-callback-signature": headers["X-Callback-Signature"]}
    assert adapter.parse_callback(raw, lower, NOW).provider_order_id == "ord-1"


@pytest.mark.parametrize("headers", [{}, {"X-Callback-Signature": ""}, {"X-Callback-Signature": "  "}])
def test_callback_without_a_signature_is_refused(adapter: ChangellyAdapter, headers: dict[str, str]) -> None:
    with pytest.raises(SignatureInvalid, match="missing"):
        adapter.parse_callback(b'{"orderId":"ord-1"}', headers, NOW)


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        (b"not json", []),
        (b"\xff\xfe", []),
        (b"[1]", []),
        (b"{}", ["orderId"]),
        (b'{"orderId":""}', ["orderId"]),
        (b'{"orderId":42}', ["orderId"]),
    ],
)
def test_callback_that_is_not_a_json_object_with_an_order_id_is_invalid(
    adapter: ChangellyAdapter, raw: bytes, fields: list[str]
) -> None:
    with pytest.raises(InvalidPayload) as exc:
        adapter.parse_callback(raw, {"X-Callback-Signature": "c2ln"}, NOW)
    assert exc.value.fields == fields


def test_callback_without_our_order_id_leaves_it_to_the_worker(adapter: ChangellyAdapter) -> None:
    raw, headers = callback(status="x" * 100)
    event = adapter.parse_callback(raw, headers, NOW)
    assert (event.external_order_id, event.provider_order_id) == ("", "ord-1")
    assert event.details == {}  # an overlong claimed status is not kept


def test_order_hint(adapter: ChangellyAdapter) -> None:
    assert adapter.order_hint(b'{"orderId":"a","externalOrderId":"o-9"}') == "o-9"
    assert adapter.order_hint(b'{"orderId":"a"}') is None
    assert adapter.order_hint(b'{"externalOrderId":7}') is None
    assert adapter.order_hint(b"garbage") is None


# -- order objects


def test_order_kind_follows_the_documented_rule(adapter: ChangellyAdapter) -> None:
    buy = fixture("callback.json")  # USD -> ETH, no refundAddress: an on-ramp order
    assert not looks_like_sell(buy)
    event = adapter.event_from_order(buy)
    assert event.kind is None and event.crypto_amount is None and event.fiat_amount is None
    assert adapter.event_from_order(buy, kind="sell").kind == "sell"
    assert looks_like_sell({"currencyFrom": "USD", "refundAddress": None})
    assert looks_like_sell({"currencyFrom": "USDT"})


def test_order_amounts_zero_or_odd_are_left_out(adapter: ChangellyAdapter) -> None:
    order = {
        "orderId": "ord-1",
        "externalOrderId": "o-1",
        "status": "created",
        "currencyFrom": "BTC",
        "currencyTo": "EUR",
        "amountFrom": 0.1,
        "payoutAmount": "0",
        "transactionHash": None,
    }
    event = adapter.event_from_order(order)
    assert (event.crypto_amount, event.fiat_amount, event.fiat_currency) == ("0.1", None, "EUR")
    assert event.details == {}
    assert event.received_at == NOW.isoformat()
    assert adapter.event_from_order({**order, "amountFrom": "lots"}).crypto_amount is None
    assert json.loads(event.raw_body) == order


@pytest.mark.parametrize("missing", ["status", "orderId", "externalOrderId"])
def test_order_without_status_or_ids_is_an_invalid_answer(adapter: ChangellyAdapter, missing: str) -> None:
    order = {"orderId": "ord-1", "externalOrderId": "o-1", "status": "pending"}
    del order[missing]
    with pytest.raises(ProviderResponseInvalid):
        adapter.event_from_order(order)


def test_poll_needs_an_id(adapter: ChangellyAdapter) -> None:
    with pytest.raises(ValueError, match="poll needs"):
        adapter.poll("")


def page(*orders: dict[str, Any]) -> bytes:
    return json.dumps({"orders": list(orders), "limit": 100, "offset": 0, "total": len(orders)}).encode()


def test_poll_finds_nothing_then_rejects(canned: Canned) -> None:
    canned.reply = (200, page(), {})
    with pytest.raises(ProviderRejected, match="not found") as exc:
        ChangellyAdapter(settings(canned.base)).poll("o-1")
    assert exc.value.code == "notFound"


def test_poll_answer_about_another_order_is_invalid(canned: Canned) -> None:
    adapter = ChangellyAdapter(settings(canned.base))
    canned.reply = (200, page({"orderId": "ord-2", "externalOrderId": "o-2", "status": "complete"}), {})
    with pytest.raises(ProviderResponseInvalid, match="another order"):
        adapter.poll("o-1")
    # Our stored orderId answers with someone else's externalOrderId (a poisoned id, or C-3).
    canned.reply = (200, page({"orderId": "ord-1", "externalOrderId": "o-2", "status": "complete"}), {})
    with pytest.raises(ProviderResponseInvalid, match="another order"):
        adapter.poll("o-1", provider_order_id="ord-1")
    # The worker resolving a bare callback asks by orderId alone: that is fine.
    assert adapter.poll("", provider_order_id="ord-1").external_order_id == "o-2"


@pytest.mark.parametrize(
    "body", [b'"text"', b'{"orders":{}}', b'{"orders":[1]}', b'{"orders":[],"total":-1}', b"<html>"]
)
def test_poll_answer_of_another_shape_is_invalid(canned: Canned, body: bytes) -> None:
    canned.reply = (200, body, {})
    with pytest.raises(ProviderResponseInvalid):
        ChangellyAdapter(settings(canned.base)).poll("o-1")


def test_backfill_refuses_naive_dates_and_bad_page_sizes(adapter: ChangellyAdapter) -> None:
    with pytest.raises(ValueError, match="timezone"):
        next(adapter.backfill(datetime(2026, 1, 1)))
    for size in (0, 101, True):
        with pytest.raises(ValueError, match="page_size"):
            next(adapter.backfill(NOW, page_size=size))
    assert iso_utc(datetime.fromisoformat("2026-01-01T02:00:00+02:00")) == "2026-01-01T00:00:00.000Z"


def test_backfill_stops_at_the_page_bound(canned: Canned, monkeypatch: pytest.MonkeyPatch) -> None:
    # A provider that claims more orders forever must not keep us paging forever.
    from orders.providers.changelly import adapter as module

    monkeypatch.setattr(module, "MAX_BACKFILL_PAGES", 3)
    order = {"orderId": "ord-1", "externalOrderId": "o-1", "status": "pending"}
    canned.reply = (200, json.dumps({"orders": [order], "total": 10**6}).encode(), {})
    events = list(ChangellyAdapter(settings(canned.base)).backfill(NOW, NOW, page_size=1))
    assert len(events) == 3 and len(canned.requests) == 3


def test_backfill_skips_an_order_it_cannot_file(canned: Canned) -> None:
    orders = [
        {"orderId": "ord-1", "status": "pending"},
        {"orderId": "ord-2", "externalOrderId": "o-2", "status": "failed"},
    ]
    canned.reply = (200, json.dumps(orders).encode(), {})
    events = list(ChangellyAdapter(settings(canned.base)).backfill(NOW, NOW))
    assert [e.external_order_id for e in events] == ["o-2"]


# -- creation


def test_validate_create_accepts_the_documented_fields() -> None:
    full = sell(
        amountFrom=0.002,
        country="US",
        state="US-CA",
        ip="203.0.113.7",
        refundAddress="bc1qrefund",
        paymentMethod="card",
        userAgent="Mozilla/5.0",
        metadata={"any": ["thing"]},
        kind="sell",
    )
    valid = validate_create(full)
    assert valid["amountFrom"] == "0.002" and valid["metadata"] == {"any": ["thing"]}
    assert validate_create(sell()) == sell()  # optional fields stay absent


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"country": "US"}, ["state"]),
        ({"country": "de"}, ["country"]),
        ({"amountFrom": "0"}, ["amountFrom"]),
        ({"amountFrom": -1}, ["amountFrom"]),
        ({"amountFrom": "NaN"}, ["amountFrom"]),
        ({"amountFrom": True}, ["amountFrom"]),
        ({"currencyFrom": "btc", "currencyTo": ""}, ["currencyFrom", "currencyTo"]),
        ({"ip": "300.1.1.1"}, ["ip"]),
        ({"metadata": "x"}, ["metadata"]),
        ({"kind": "buy"}, ["kind"]),
        ({"walletAddress": "x", "externalOrderId": ""}, ["externalOrderId", "walletAddress"]),
    ],
)
def test_validate_create_names_every_bad_field_sorted(changes: dict[str, Any], fields: list[str]) -> None:
    with pytest.raises(InvalidPayload) as exc:
        validate_create(sell(**changes))
    assert exc.value.fields == fields


def test_validate_create_names_missing_fields() -> None:
    with pytest.raises(InvalidPayload) as exc:
        validate_create({"externalOrderId": "o-1"})
    assert exc.value.fields == [
        "amountFrom",
        "country",
        "currencyFrom",
        "currencyTo",
        "externalUserId",
        "providerCode",
    ]


def test_creation_event_records_our_request() -> None:
    event = creation_event(validate_create(sell(amountFrom=0.5)), NOW)
    assert (event.source, event.provider_status, event.dedup_key, event.kind) == (
        "create",
        None,
        "create",
        "sell",
    )
    assert (event.crypto_amount, event.crypto_currency, event.fiat_currency) == ("0.5", "BTC", "EUR")
    assert event.fiat_amount is None and json.loads(event.raw_body)["amountFrom"] == "0.5"


def test_submit_create_refuses_an_answer_without_an_order_id(canned: Canned) -> None:
    canned.reply = (200, json.dumps({"externalOrderId": "o-1", "externalUserId": "u-1"}).encode(), {})
    with pytest.raises(ProviderResponseInvalid, match="orderId"):
        ChangellyAdapter(settings(canned.base)).submit_create(validate_create(sell()))
    canned.reply = (200, b"[]", {})
    with pytest.raises(ProviderResponseInvalid, match="not an object"):
        ChangellyAdapter(settings(canned.base)).submit_create(validate_create(sell()))
