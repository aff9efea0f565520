"""Changelly end to end: callbacks are triggers, the signed poll is the truth."""

from __future__ import annotations

import random
import time

import pytest
import requests
from conftest import Stack
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer
from scenarios import changelly_sell, settle_changelly

from orders.providers.changelly.statuses import STATUS_MAP
from workers import cli
from workers.queue import POLLS

LIFECYCLES = {
    "complete": ["pending", "complete"],
    "resumed": ["pending", "hold", "pending", "complete"],
    "held": ["pending", "hold"],
    "failed": ["pending", "failed"],
    "expired": ["expired"],
    "refunded": ["pending", "refunded"],
    "created": [],
}


def create(stack: Stack, order_id: str) -> str:
    resp = stack.api("POST", "/api/orders/changelly", json=changelly_sell(order_id))
    assert resp.status_code == 201, resp.text
    view = resp.json()
    assert view["status"] == "CREATED" and view["provider_order_id"]
    assert view["details"]["redirect_url"].startswith("http")
    return view["provider_order_id"]


settle = settle_changelly


def canonical(status: str) -> str:
    return STATUS_MAP.lookup(status).status.value


def test_a_callback_is_recorded_and_the_poll_is_applied(stack: Stack) -> None:
    create(stack, "cb-1")
    stack.changelly.advance("cb-1", "pending")
    settle(stack)
    view = stack.api("GET", "/api/orders/changelly/cb-1").json()
    assert view["status"] == "PROCESSING" and view["provider_status"] == "pending"
    callback, poll = [e for e in view["timeline"] if e["source"] in ("callback", "poll")]
    assert (callback["decision"], callback["provider_status"]) == ("recorded", None)
    assert callback["verified_by"] == "CHANGELLY_CALLBACK_PUBLIC_KEY"
    assert (poll["decision"], poll["provider_status"]) == ("applied", "pending")
    assert callback["claimed_status"] == "pending" and "claimed_status" not in view["details"]


def test_a_forged_status_in_a_replayed_callback_changes_nothing(stack: Stack) -> None:
    create(stack, "replay")
    stack.changelly.set_switches(order_id="replay", drop=True)
    stack.changelly.advance("replay", "pending")
    order = stack.changelly.order("replay")
    # A genuine signature (it covers only the orderId) replayed with a forged body.
    from orders.providers.changelly import signing

    signature = signing.sign_callback(order["orderId"], stack.changelly._callback_private_key)
    for n in range(5):  # five different bodies, one signed content
        forged = {
            "orderId": order["orderId"],
            "status": "complete",
            "externalOrderId": "someone-else",
            "n": n,
        }
        resp = requests.post(
            stack.base + "/webhooks/changelly",
            json=forged,
            headers={"X-Callback-Signature": signature},
            timeout=5,
        )
        assert resp.status_code == 200
    stack.drain()
    polls_made = lambda: sum(  # noqa: E731
        1 for e in stack.runtime.store.order_view("changelly", "replay").events if e.source == "poll"
    )
    scheduled = ScheduledJobRegistry(POLLS, connection=stack.runtime.redis, serializer=JSONSerializer)
    assert polls_made() == 1 and scheduled.count <= 1  # one poll now, at most one deferred
    time.sleep(1.2)  # the window (1 s in the tests) ends
    stack.drain()
    assert polls_made() <= 2  # never one per replay
    recorded = [
        e for e in stack.runtime.store.order_view("changelly", "replay").events if e.source == "callback"
    ]
    # One record: the bodies differ only where the signature does not reach.
    assert len(recorded) == 1 and recorded[0].decision == "recorded" and recorded[0].seen_count >= 1
    view = stack.api("GET", "/api/orders/changelly/replay").json()
    assert view["status"] == "PROCESSING"  # the provider's truth, not the forged "complete"
    assert stack.runtime.store.order_view("changelly", "someone-else") is None


def test_chaos_then_reconcile_reaches_the_truth(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(1121)
    orders = {f"ch-{i:02d}": rng.choice(list(LIFECYCLES)) for i in range(14)}
    for order_id in orders:
        create(stack, order_id)
    stack.changelly.set_switches(drop_rate=0.4, seed=3, duplicate=1)
    for i, order_id in enumerate(orders):
        if i % 3 == 0:
            stack.changelly.set_switches(order_id=order_id, reorder=True)
        if i % 4 == 0:
            stack.changelly.set_switches(order_id=order_id, drop=True)
    for order_id, kind in orders.items():
        for status in LIFECYCLES[kind]:
            stack.changelly.advance(order_id, status)
    settle(stack)
    assert stack.changelly.dropped
    truth = stack.changelly.truth()
    lagging = [
        o for o in orders if stack.runtime.store.order_view("changelly", o).status != canonical(truth[o])
    ]
    assert lagging, "all-dropped orders must lag until reconciled"
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["reconcile", "--provider", "changelly"]) == 0
    for order_id in orders:
        order = stack.runtime.store.order_view("changelly", order_id)
        assert order.status == canonical(truth[order_id]), (order_id, order.status, truth[order_id])
        assert [a.kind for a in order.anomalies] == []


def test_backfill_adopts_orders_we_never_saw(stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from datetime import UTC, datetime, timedelta

    day = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(130):
        stack.changelly.create_order(f"old-{i:03d}", created_at=day + timedelta(minutes=i))
    stack.changelly.advance("old-007", "complete")
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    assert (
        cli.main(["backfill", "--provider", "changelly", "--since", "2026-03-01", "--until", "2026-03-02"])
        == 0
    )
    out = capsys.readouterr().out
    assert "orders 130" in out and "adopted 130" in out
    assert stack.runtime.store.order_view("changelly", "old-007").status == "SUCCESS"
    assert stack.runtime.store.order_view("changelly", "old-129").status == "AWAITING_PAYMENT"
    assert cli.main(["backfill", "--provider", "changelly", "--since", "2026-03-01"]) == 0
    assert "duplicate 130" in capsys.readouterr().out
