"""Fuspay end to end: signed events over real HTTP, chaos, then the reconciler."""

from __future__ import annotations

import random

import pytest
from conftest import Stack

from orders.providers.fuspay.statuses import STATUS_MAP
from workers import cli

SELL = {
    "received": ["event.sell.received.crypto"],
    "credited": ["event.sell.received.crypto", "event.sell.credited.fiat"],
    "kyc_then_credited": [
        "event.sell.received.crypto",
        "event.sell.received.fiat_kyc_error",
        "event.sell.credited.fiat",
    ],
    "kyc_hold": ["event.sell.received.crypto", "event.sell.received.fiat_kyc_error"],
    "error": ["event.sell.error"],
    "refunded": ["event.sell.received.crypto", "sell.event.close"],
    "init": [],
}
BUY = {
    "credited": ["event.buy.received.fiat", "event.buy.credited.crypto"],
    "received": ["event.buy.received.fiat"],
    "error": ["event.buy.error"],
}


def create(stack: Stack, order_id: str) -> None:
    resp = stack.api(
        "POST",
        "/api/orders/fuspay",
        json={
            "partner_order_id": order_id,
            "chain": "usdt-trc20",
            "crypto_amount": "100",
            "fiat_currency_to_receive": "NGN",
            "partner_callback_url": f"{stack.base}/webhooks/fuspay",
            "seller_phone": "+2348000000000",
            "seller_email": "seller@example.com",
            "first_name": "Ada",
            "last_name": "Obi",
            "account_name": "Ada Obi",
            "account_number": "0123456789",
            "account_code": "090405",
            "intrapay_merchant_id": "m-1",
            "markup_fee": "1",
            "refund_wallet_address": "TXLYE1yx8LyXfTY1utnXEm7DtzWsgvYBWB",
        },
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "CREATED"  # Fuspay answers only {"message": "OK"}


def canonical(event_name: str) -> str:
    return STATUS_MAP.lookup(event_name).status.value


def settle(stack: Stack) -> None:
    stack.fuspay.flush()
    assert stack.fuspay.wait_idle(20)
    stack.drain()


def test_a_sell_order_reaches_success_through_its_events(stack: Stack) -> None:
    create(stack, "fs-1")
    settle(stack)  # event.sell.init arrives with the address to pay
    view = stack.api("GET", "/api/orders/fuspay/fs-1").json()
    assert view["status"] == "AWAITING_PAYMENT"
    assert view["details"]["wallet_address"]
    assert view["provider_order_id"] == "fs-1_p176517"
    for event in SELL["kyc_then_credited"]:
        stack.fuspay.advance(
            "fs-1", event, **({"payout_status": "SUCCESSFUL"} if "credited" in event else {})
        )
        settle(stack)
    view = stack.api("GET", "/api/orders/fuspay/fs-1").json()
    assert view["status"] == "SUCCESS" and view["provider_status"] == "event.sell.credited.fiat"
    applied = [
        (e["provider_status"], e["verified_by"]) for e in view["timeline"] if e["source"] == "callback"
    ]
    assert [a for a, _ in applied] == [
        "event.sell.init",
        "event.sell.received.crypto",
        "event.sell.received.fiat_kyc_error",
        "event.sell.credited.fiat",
    ]
    assert {v for _, v in applied} == {"FUSPAY_PUBLIC_KEY+FUSPAY_SECRET_KEY"}
    assert "0123456789" not in str(view["details"])  # bank data stays in raw bodies


def test_chaos_then_reconcile_reaches_the_truth(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(42)
    sells = {f"fsell-{i:02d}": rng.choice(list(SELL)) for i in range(10)}
    buys = {f"fbuy-{i:02d}": rng.choice(list(BUY)) for i in range(5)}
    stack.fuspay.set_switches(drop_rate=0.4, seed=11, duplicate=1)
    for order_id in sells:
        create(stack, order_id)
    for order_id in buys:  # buys we never created: adopted from their events
        stack.fuspay.create_order(order_id, "buy", fiat_amount=170000)
    for i, order_id in enumerate([*sells, *buys]):
        if i % 3 == 0:
            stack.fuspay.set_switches(order_id=order_id, reorder=True)
        if i % 4 == 0:
            stack.fuspay.set_switches(order_id=order_id, drop=True)
    for order_id, kind in sells.items():
        for event in SELL[kind]:
            stack.fuspay.advance(
                order_id, event, **({"payout_status": "COMPLETED"} if "credited" in event else {})
            )
    for order_id, kind in buys.items():
        for event in BUY[kind]:
            stack.fuspay.advance(order_id, event)
    settle(stack)
    assert stack.fuspay.dropped
    truth = stack.fuspay.truth()
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["reconcile", "--all-open"]) == 0  # the sells; buys never seen are not open orders yet
    for order_id in buys:  # an operator reconciles orders by id, adopting them
        assert cli.main(["reconcile", "--provider", "fuspay", "--order", order_id]) == 0
    for order_id in [*sells, *buys]:
        order = stack.runtime.store.order_view("fuspay", order_id)
        assert order is not None, order_id
        assert order.status == canonical(truth[order_id]), (order_id, order.status, truth[order_id])
        assert [a.kind for a in order.anomalies] == []


def test_an_unknown_event_is_recorded_as_an_anomaly_and_answered_200(stack: Stack) -> None:
    create(stack, "fs-odd")
    settle(stack)
    body = stack.fuspay.signed_event("fs-odd")
    body["event_name"] = "event.sell.surprise"
    from orders.providers.fuspay import signing

    body["signature"] = signing.sign(
        signing.unsigned(body),
        signing.key_material("pk_partner_test_0001", "sk_partner_test_0001", "public+secret"),
        "hmac-sha512",
    )
    import requests

    resp = requests.post(stack.base + "/webhooks/fuspay", json=body, timeout=5)
    assert resp.status_code == 200
    stack.drain()
    view = stack.api("GET", "/api/orders/fuspay/fs-odd").json()
    assert view["status"] == "AWAITING_PAYMENT"
    assert [a["kind"] for a in view["anomalies"]] == ["unknown_status"]
    assert view["timeline"][-1]["decision"] == "unknown_status"
