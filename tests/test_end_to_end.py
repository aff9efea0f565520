"""End to end with the AliX sandbox: real HTTP both ways, real Redis, real RQ workers.

Orders are created through the API; the sandbox moves them and posts signed IPNs,
some dropped, duplicated, delayed and reordered; workers apply what arrives; then
the reconciler runs, and every order must be at the sandbox's true status.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from conftest import Stack

from orders.providers.alixpay.statuses import STATUS_MAP
from workers import cli, jobs

LIFECYCLES = {
    "SUCCESS": ["PAYMENT_COMPLETED", "PROCESSING_TOKEN_TRANSFER", "SUCCESS"],
    "ERROR": ["PAYMENT_COMPLETED", "ERROR"],
    "FAIL": ["FAIL"],
    "PROCESSING_TOKEN_TRANSFER": ["PROCESSING_TOKEN_TRANSFER"],
    "PAYMENT_COMPLETED": ["PAYMENT_COMPLETED"],
    "AWAITING_PAYMENT": [],
}


def create(stack: Stack, order_id: str, amount: int = 1_000_000) -> None:
    resp = stack.api(
        "POST",
        "/api/orders/alixpay",
        json={
            "externalOrderId": order_id,
            "currency": "USDT",
            "network": "TRC20",
            "fiatAmount": amount,
            "bankCode": "VCB",
            "bankAccountNumber": "0123456789",
            "bankAccountName": "NGUYEN VAN A",
        },
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "AWAITING_PAYMENT"


def canonical(provider_status: str) -> str:
    return STATUS_MAP.lookup(provider_status).status.value


def assert_matches_truth(stack: Stack, order_ids: list[str]) -> None:
    truth = stack.sandbox.truth()
    for order_id in order_ids:
        order = stack.runtime.store.order_view("alixpay", order_id)
        assert order.status == canonical(truth[order_id]), (order_id, order.status, truth[order_id])


def test_chaos_then_reconcile_reaches_the_truth(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261121)
    orders = {f"chaos-{i:02d}": rng.choice(list(LIFECYCLES)) for i in range(18)}
    stack.sandbox.set_switches(drop_rate=0.35, seed=7, duplicate=1)
    for order_id in orders:
        create(stack, order_id)
    for i, order_id in enumerate(orders):
        if i % 3 == 0:
            stack.sandbox.set_switches(order_id=order_id, reorder=True)
        if i % 5 == 0:
            stack.sandbox.set_switches(order_id=order_id, delay=0.2)
        if i % 7 == 0:
            stack.sandbox.set_switches(order_id=order_id, drop=True)
    for order_id, final in orders.items():
        for status in LIFECYCLES[final]:
            stack.sandbox.advance(order_id, status)
    stack.sandbox.flush()
    assert stack.sandbox.wait_idle(20)
    stack.drain()
    delivered = {(o, s) for o, s, code in stack.sandbox.deliveries if code == 200}
    assert delivered, "some IPNs must have arrived"
    assert stack.sandbox.dropped, "some IPNs must have been dropped"
    # Before reconciliation: every delivered IPN was applied or recognised, nothing regressed.
    for order_id in orders:
        order = stack.runtime.store.order_view("alixpay", order_id)
        got = {e.provider_status for e in order.events if e.source == "callback"}
        assert got == {s for o, s in delivered if o == order_id}
    lagging = [
        o
        for o in orders
        if stack.runtime.store.order_view("alixpay", o).status != canonical(stack.sandbox.truth()[o])
    ]
    assert lagging, "the chaos must have left some orders behind"

    # The reconciler, as an operator runs it.
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["reconcile", "--all-open"]) == 0
    assert_matches_truth(stack, list(orders))
    # Terminal orders were never touched again; applied events follow the lifecycle.
    for order_id in orders:
        order = stack.runtime.store.order_view("alixpay", order_id)
        versions = [e.version_after for e in order.events]
        assert versions == sorted(versions)
        assert order.anomalies == []


def test_the_sweep_heals_orders_whose_ipns_were_all_lost(stack: Stack) -> None:
    ids = [f"lost-{i}" for i in range(4)]
    for order_id in ids:
        create(stack, order_id)
        stack.sandbox.set_switches(order_id=order_id, drop=True)
        for status in LIFECYCLES["SUCCESS"]:
            stack.sandbox.advance(order_id, status)
    stack.drain()
    assert all(stack.runtime.store.order_view("alixpay", o).status == "AWAITING_PAYMENT" for o in ids)
    later = datetime.now(UTC) + timedelta(minutes=5)
    stack.runtime.store.clock = lambda: later
    result = jobs.sweep()
    assert result["due"] == 4 and result["queued"] == 4
    stack.drain()
    assert_matches_truth(stack, ids)
    order = stack.runtime.store.order_view("alixpay", ids[0])
    assert [e.source for e in order.events if e.decision == "applied"] == ["create", "create", "poll"]
    assert order.events[-1].verified_by == "ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY"


def test_a_callback_for_an_unknown_order_is_adopted(stack: Stack) -> None:
    stack.sandbox.create_order("born-elsewhere", 50000)
    stack.sandbox.advance("born-elsewhere", "PAYMENT_COMPLETED")
    assert stack.sandbox.wait_idle(10)
    stack.drain()
    resp = stack.api("GET", "/api/orders/alixpay/born-elsewhere")
    assert resp.status_code == 200
    view = resp.json()
    assert view["status"] == "PROCESSING" and view["provider_status"] == "PAYMENT_COMPLETED"
    assert view["amounts"]["fiat_amount"] == "50000"
    assert [e["source"] for e in view["timeline"]] == ["callback"]


def test_a_forged_callback_heals_through_a_poll(stack: Stack) -> None:
    create(stack, "forged")
    stack.sandbox.set_switches(order_id="forged", drop=True)
    stack.sandbox.advance("forged", "SUCCESS")
    forged = {
        "externalOrderId": "forged",
        "type": "sell",
        "fiatAmount": 1,
        "status": "ERROR",
        "signature": "AAAA",
    }
    resp = requests.post(stack.base + "/webhooks/alixpay", json=forged, timeout=5)
    assert resp.status_code == 401
    stack.drain()
    view = stack.api("GET", "/api/orders/alixpay/forged").json()
    assert view["status"] == "SUCCESS"  # the provider's truth, from the healing poll
    assert all(e["provider_status"] != "ERROR" for e in view["timeline"])


def test_the_worker_finishes_its_job_on_sigterm(stack: Stack) -> None:
    create(stack, "slow")
    stack.sandbox.advance("slow", "SUCCESS")
    stack.sandbox.set_switches(detail_delay=2.0)
    stack.runtime.queues.enqueue_poll("alixpay", "slow", reason="test")
    env = {**os.environ, **stack.env, "RAMPWATCH_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker"],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if stack.runtime.redis.exists("rq:wip:polls") or any(
                True for _ in stack.runtime.redis.scan_iter("rq:execution:*")
            ):
                break
            time.sleep(0.05)
        time.sleep(0.3)  # the poll is now waiting on the slow provider
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode()[-2000:]
    view = stack.api("GET", "/api/orders/alixpay/slow").json()
    assert view["status"] == "SUCCESS"
    assert view["timeline"][-1]["source"] == "poll"
