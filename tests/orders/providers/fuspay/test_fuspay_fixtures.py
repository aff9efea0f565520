"""One test per Fuspay fixture (tests/fixtures/fuspay), named after it: the fixture is
signed at test time with the code that verifies, parsed, and checked field by field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fuspay_testkit import CURRENT, fixture, fixture_stems, settings_for, signed, wire

from orders.providers.fuspay.adapter import FuspayAdapter
from orders.providers.fuspay.statuses import STATUS_MAP
from orders.states import Status

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SELL_TX = "b9c4e6d87c6a38a43631c2c0a4f047d8038f7bf717723ea3c6346b1084438fa7"
SELL = {
    "external_order_id": "BETA-AXIS-SELL-NGN-0004001",
    "provider_order_id": "BETA-AXIS-SELL-NGN-0004001_p176517",
    "kind": "sell",
    "fiat_amount": "1000",
    "fiat_currency": "NGN",
    "crypto_amount": "100",
    "crypto_currency": "USDT",
}
SELL_DETAILS = {"wallet_address": "TXLYE1yx8LyXfTY1utnXEm7DtzWsgvYBWB", "network": "usdt-trc20"}
BUY = {
    "external_order_id": "AXIS-BUY-NGN-0000042",
    "provider_order_id": "AXIS-BUY-NGN-0000042_p176517",
    "kind": "buy",
    "fiat_amount": "15200",
    "fiat_currency": "NGN",
    "crypto_amount": "10",
    "crypto_currency": "USDT",
}
BUY_TX = "0f3a9c1e2b4d6f8a0c2e4a6b8d0f1a3c5e7a9b1d3f5a7c9e1b3d5f7a9c1e3b5d"

# stem -> (canonical status, the Event fields expected)
EXPECTED: dict[str, tuple[Status, dict[str, Any]]] = {
    "event_sell_init": (
        Status.AWAITING_PAYMENT,
        {
            **SELL,
            "provider_status": "event.sell.init",
            "details": {**SELL_DETAILS, "fiat_payment_status": "PENDING", "crypto_payment_status": "PENDING"},
        },
    ),
    "event_sell_received_crypto": (
        Status.PAYMENT_RECEIVED,
        {
            **SELL,
            "provider_status": "event.sell.received.crypto",
            "details": {
                **SELL_DETAILS,
                "tx_hash": SELL_TX,
                "fiat_payment_status": "STARTED",
                "crypto_payment_status": "PAID",
            },
        },
    ),
    "event_sell_received_fiat_kyc_error__fixed_double_comma": (
        Status.ON_HOLD,
        {
            "external_order_id": "SENTZ-SELL-ORDER-TEST-MY-IP-7",
            "provider_order_id": "SENTZ-SELL-ORDER-TEST-MY-IP-7_p533522",
            "kind": "sell",
            "fiat_amount": "14700",
            "fiat_currency": "NGN",
            "crypto_amount": "10",
            "crypto_currency": "USDT",
            "provider_status": "event.sell.received.fiat_kyc_error",
            "details": {
                "wallet_address": "TMy5QkqNiad5VJdidfyg6gnMpuCD7jLEac",
                "network": "usdt-trc20",
                "tx_hash": "7c52f888bccdb9c12e88e57a08a8e993fdd578abe8413161be2cf9aaea",
                "fiat_payment_status": "STARTED",
                "crypto_payment_status": "PAID",
                "kyc_error_type": "NO_KYC",
            },
        },
    ),
    "event_sell_credited_fiat__fixed_event_name_and_statuses_F1": (
        Status.SUCCESS,
        {
            **SELL,
            "provider_status": "event.sell.credited.fiat",
            "details": {
                **SELL_DETAILS,
                "tx_hash": SELL_TX,
                "fiat_payment_status": "PAID",
                "crypto_payment_status": "PAID",
            },
        },
    ),
    "sell_event_close__concrete_from_json5": (
        Status.REFUNDED,
        {
            **SELL,
            "provider_status": "sell.event.close",
            "details": {
                **SELL_DETAILS,
                "tx_hash": SELL_TX,
                "fiat_payment_status": "CANCELED",
                "crypto_payment_status": "PAID",
            },
        },
    ),
    "event_sell_error__constructed": (
        Status.FAILED,
        {
            **SELL,
            "provider_status": "event.sell.error",
            # "Cancelled" as the prose spells it (doc bug F-5), normalised
            "details": {
                **SELL_DETAILS,
                "tx_hash": SELL_TX,
                "fiat_payment_status": "CANCELED",
                "crypto_payment_status": "PAID",
            },
        },
    ),
    "event_buy_init__constructed": (
        Status.AWAITING_PAYMENT,
        {
            **BUY,
            "provider_status": "event.buy.init",
            "details": {
                "network": "usdt-trc20",
                "fiat_payment_status": "PENDING",
                "crypto_payment_status": "PENDING",
            },
        },
    ),
    "event_buy_received_fiat__constructed": (
        Status.PAYMENT_RECEIVED,
        {
            **BUY,
            "provider_status": "event.buy.received.fiat",
            "details": {
                "network": "usdt-trc20",
                "fiat_payment_status": "PAID",
                "crypto_payment_status": "STARTED",
            },
        },
    ),
    "event_buy_credited_crypto__constructed": (
        Status.SUCCESS,
        {
            **BUY,
            "provider_status": "event.buy.credited.crypto",
            "details": {
                "network": "usdt-trc20",
                "tx_hash": BUY_TX,
                "fiat_payment_status": "PAID",
                "crypto_payment_status": "COMPLETED",
            },
        },
    ),
    "event_buy_error__constructed": (
        Status.FAILED,
        {
            **BUY,
            "provider_status": "event.buy.error",
            "details": {
                "network": "usdt-trc20",
                "fiat_payment_status": "CANCELED",
                "crypto_payment_status": "CANCELED",
            },
        },
    ),
}
PERSONAL = (
    "Avis Charles",
    "0123456789",
    "avis@example.com",
    "+2348000000000",
    "buyer@example.com",
    "Ada",
    "Obi",
)


def test_every_fixture_has_an_expectation() -> None:
    assert fixture_stems() == sorted(EXPECTED)


@pytest.mark.parametrize("stem", fixture_stems())
def test_fixture(stem: str) -> None:
    canonical, expected = EXPECTED[stem]
    body = signed(fixture(stem))
    raw = wire(body)

    event = FuspayAdapter(settings_for()).parse_callback(raw, {}, AT)

    assert {name: getattr(event, name) for name in expected} == expected
    assert STATUS_MAP.lookup(event.provider_status).status is canonical
    assert event.source == "callback"
    assert event.dedup_key == f"event:{expected['provider_status']}"
    assert event.verified_by == CURRENT
    assert event.raw_body == raw.decode()
    assert event.received_at == "2026-03-01T12:00:00+00:00"
    assert not any(value in str(event.details) for value in PERSONAL)
    assert event.to_dict()["details"] == expected["details"]
