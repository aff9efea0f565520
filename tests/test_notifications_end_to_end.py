"""Partner notifications end to end: orders created through the API, moved by the AliX
sandbox's signed IPNs (or found by the reconciler's polls), applied by real RQ workers,
and delivered to a partner endpoint on 127.0.0.1 that verifies each one with the
Standard Webhooks library."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from conftest import Stack
from notify_receiver import OK, Arrival, PartnerReceiver
from test_end_to_end import create

from config import Named
from workers import jobs

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
LIFECYCLE = ["PAYMENT_COMPLETED", "SUCCESS"]


@pytest.fixture
def partner(stack: Stack) -> Iterator[PartnerReceiver]:
    """The partner's endpoint, and the workers told to push to it."""
    with PartnerReceiver([SECRET]) as receiver:
        pushing = replace(
            stack.settings,
            notify_url=receiver.url,
            notify_secrets=(Named("NOTIFY_SECRET", SECRET),),
            notify_timeout=1.0,
            notify_backoff=(1,),
        )
        stack.runtime.settings = pushing
        stack.web.settings = pushing  # the API queues a creation's delivery
        yield receiver


def trail(arrivals: list[Arrival], order: str) -> list[tuple[str, str, str]]:
    return [
        (a.payload["data"]["previous_status"], a.payload["data"]["status"], a.payload["data"]["source"])
        for a in arrivals
        if a.order == order
    ]


def run_sweep(stack: Stack, ahead: float = 0.0) -> None:
    """One sweep as the clock runs it, ``ahead`` seconds in the future, then the workers."""
    if ahead:
        stack.runtime.store.clock = lambda: datetime.now(UTC) + timedelta(seconds=ahead)
    jobs.sweep()
    stack.drain()


def test_every_status_change_reaches_the_partner_verified_and_in_order(
    stack: Stack, partner: PartnerReceiver
) -> None:
    create(stack, "n-1")
    for status in LIFECYCLE:
        stack.sandbox.advance("n-1", status)
    assert stack.sandbox.wait_idle(10)
    stack.drain()
    got = partner.wait_for(3)
    assert trail(got, "n-1") == [
        ("CREATED", "AWAITING_PAYMENT", "create"),
        ("AWAITING_PAYMENT", "PROCESSING", "callback"),
        ("PROCESSING", "SUCCESS", "callback"),
    ]
    versions = [a.version for a in got]
    assert versions == sorted(set(versions))
    last = got[-1].payload
    assert last["type"] == "order.status_changed"
    assert last["data"]["provider"] == "alixpay" and last["data"]["provider_status"] == "SUCCESS"
    assert last["data"]["terminal_at"] is not None
    assert all(a.verified for a in partner.arrivals) and len(partner.arrivals) == 3
    view = stack.api("GET", "/api/orders/alixpay/n-1").json()
    assert view["version"] == versions[-1] and view["status"] == "SUCCESS"


def test_a_partner_down_for_a_while_gets_everything_in_order_once_back(
    stack: Stack, partner: PartnerReceiver
) -> None:
    partner.answer = lambda a: (503, 0.0, {}) if a.order == "down-1" else OK
    for order in ("down-1", "up-1"):
        create(stack, order)
        for status in LIFECYCLE:
            stack.sandbox.advance(order, status)
    assert stack.sandbox.wait_idle(10)
    stack.drain()
    assert [s for _, s, _ in trail(partner.delivered, "up-1")] == [
        "AWAITING_PAYMENT",
        "PROCESSING",
        "SUCCESS",
    ]
    assert trail(partner.delivered, "down-1") == []
    tried = {a.webhook_id for a in partner.arrivals if a.order == "down-1"}
    assert len(tried) == 1  # only the oldest was tried: the later ones wait behind it
    partner.answer = lambda _a: OK
    run_sweep(stack, ahead=3)
    assert [s for _, s, _ in trail(partner.delivered, "down-1")] == [
        "AWAITING_PAYMENT",
        "PROCESSING",
        "SUCCESS",
    ]
    retried = next(a for a in partner.delivered if a.order == "down-1")
    assert retried.webhook_id in tried  # the same id as the failed attempt


def test_a_change_found_by_the_reconciler_is_delivered_too(stack: Stack, partner: PartnerReceiver) -> None:
    create(stack, "lost-1")
    stack.sandbox.set_switches(order_id="lost-1", drop=True)
    for status in LIFECYCLE:
        stack.sandbox.advance("lost-1", status)
    assert stack.sandbox.wait_idle(10)
    stack.drain()
    run_sweep(stack, ahead=10)  # the order's poll is due: the poll applies SUCCESS
    assert trail(partner.wait_for(2), "lost-1") == [
        ("CREATED", "AWAITING_PAYMENT", "create"),
        ("AWAITING_PAYMENT", "SUCCESS", "poll"),
    ]


def test_a_creation_is_delivered_without_waiting_for_a_sweep(stack: Stack, partner: PartnerReceiver) -> None:
    create(stack, "made-1")
    stack.drain()  # the workers only: no sweep runs
    assert trail(partner.wait_for(1), "made-1") == [("CREATED", "AWAITING_PAYMENT", "create")]


def test_a_refused_creation_is_delivered_as_failed(stack: Stack, partner: PartnerReceiver) -> None:
    stack.sandbox.create_order("refused-1", 500000)  # AliX has it already: it refuses ours
    body = {
        "externalOrderId": "refused-1",
        "currency": "USDT",
        "network": "TRC20",
        "fiatAmount": 1_000_000,
        "bankCode": "VCB",
        "bankAccountNumber": "0123456789",
        "bankAccountName": "NGUYEN VAN A",
    }
    assert stack.api("POST", "/api/orders/alixpay", json=body).status_code == 502
    stack.drain()
    assert trail(partner.wait_for(1), "refused-1") == [("CREATED", "FAILED", "create")]
