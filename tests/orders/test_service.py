"""orders.service: how a creation request ends is recorded; a refused one closes its order.

The case found by trying: the CREATED row written before the provider call was
not closed after ``provider_rejected``, so the order was polled forever, filled
the failed registry and made ``reconcile --all-open`` exit 1.
"""

from __future__ import annotations

import pytest
from conftest import Stack, alix_settings
from scenarios import alixpay_sell

from orders.errors import ProviderUnavailable
from orders.providers.alixpay.adapter import AlixPayAdapter
from orders.service import create_order
from workers import cli

CASHOUT_BELOW_MINIMUM = {
    "kind": "cashout",
    "externalOrderId": "refused-1",
    "cryptoCurrency": "USDT",
    "userEmail": "payer@example.com",
    "fiatAmount": 1000,  # the sandbox's minimum is 50,000 VND: AliX refuses it
    "fiatCurrency": "VND",
    "extendInfo": {"recipientBankCode": "VCB", "recipientNumber": "0123456789", "transferContent": "x"},
}


def test_a_refused_creation_ends_its_order(stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    resp = stack.api("POST", "/api/orders/alixpay", json=CASHOUT_BELOW_MINIMUM)
    assert resp.status_code == 502 and resp.json()["code"] == "provider_rejected"
    view = stack.api("GET", "/api/orders/alixpay/refused-1").json()
    assert view["status"] == "FAILED" and view["terminal_at"] and view["next_poll_at"] is None
    assert view["details"]["creation"] == "refused"
    assert "HTTP 400" in view["details"]["creation_error"]
    assert [(e["source"], e["decision"], e["to"]) for e in view["timeline"]] == [
        ("create", "applied", "CREATED"),
        ("create", "applied", "FAILED"),
    ]
    assert stack.runtime.store.open_orders("alixpay") == []
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["reconcile", "--all-open"]) == 0
    assert "0 order(s), 0 failure(s)" in capsys.readouterr().out


def test_a_creation_without_an_answer_stays_open_and_says_so(stack: Stack, keys) -> None:
    """The provider cannot be reached: the order may exist there, so it is polled."""
    unreachable = AlixPayAdapter(alix_settings(keys, "http://127.0.0.1:9", timeout=1))
    with pytest.raises(ProviderUnavailable):
        create_order(stack.runtime.store, unreachable, alixpay_sell("unsure-1"))
    order = stack.runtime.store.order_view("alixpay", "unsure-1")
    assert order.status == "CREATED" and order.next_poll_at is not None
    assert order.details["creation"] == "unconfirmed"
    assert stack.runtime.store.open_orders("alixpay")[0].external_order_id == "unsure-1"
    # The provider shows the order after all: the mark goes, the status comes.
    stack.sandbox.create_order("unsure-1", 500000)
    (polled,) = stack.runtime.store.apply([stack.runtime.adapters["alixpay"].poll("unsure-1")])
    assert polled.decision.value == "applied"
    order = stack.runtime.store.order_view("alixpay", "unsure-1")
    assert order.status == "AWAITING_PAYMENT" and "creation" not in order.details
