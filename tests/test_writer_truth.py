"""The five cases of the writer review (issue 6), each as it was found, on SQLite and PostgreSQL.

1. refused events rewrote the order (details merged, amounts fixed by an unknown status);
2. unsigned claims reached the partner's view (``details.claimed_status``);
3. a late poll undid a newer hold, and polls of one order ran at the same time;
4. the error policy had holes (unknown provider, a DataError while resolving an order);
5. replays grew the history without bound.
"""

from __future__ import annotations

import contextvars
import threading
import time
from datetime import UTC, datetime

import pytest
import requests
from conftest import Stack
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer
from scenarios import changelly_sell, settle_changelly

from orders.errors import ProviderDisabled
from orders.events import Event
from orders.providers.changelly import signing as changelly_signing
from orders.providers.fuspay.adapter import FuspayAdapter
from orders.providers.fuspay.signing import sign, unsigned
from orders.store import Store
from orders.views import timeline_text
from workers import jobs
from workers.deadletters import DeadEvents
from workers.queue import APPLY_JOB, POLLS

FUSPAY_KEY = "pk_partner_test_0001" + "sk_partner_test_0001"


def fuspay_body(event_name: str, order: str = "fz-1", **fields: object) -> bytes:
    """A Fuspay event body signed as Fuspay signs it (HMAC-SHA512 over public+secret)."""
    from orders.providers.jsformat import js_stringify

    body: dict[str, object] = {
        "event_name": event_name,
        "partner_order_id": order,
        "fuspay_order_ref": f"{order}_p176517",
        "fiat_amount_to_receive": 1000,
        "crypto_amount_to_sell": 100,
        "fiat_currency": "NGN",
        "chain": "usdt-trc20",
        "pay_to_crypto_address": "TXLYE1yx8LyXfTY1utnXEm7DtzWsgvYBWB",
        "fiat_payment_status": "PENDING",
        "crypto_payment_status": "PENDING",
        "seller_crypto_txn_hash": None,
    }
    body.update(fields)
    body["signature"] = sign(unsigned(body), FUSPAY_KEY, "hmac-sha512")
    return js_stringify(body).encode()


def fuspay_event(adapter: FuspayAdapter, event_name: str, **fields: object) -> Event:
    return adapter.parse_callback(fuspay_body(event_name, **fields), {}, datetime.now(UTC))


# -- 1. a refused event changes nothing but the history


def test_a_late_stale_event_does_not_rewrite_a_finished_order(stack: Stack) -> None:
    fuspay = stack.runtime.adapters["fuspay"]
    store = stack.runtime.store
    late = fuspay_event(
        fuspay,
        "event.sell.received.crypto",
        crypto_payment_status="PAID",
        fiat_payment_status="STARTED",
        seller_crypto_txn_hash="0xolder",
    )
    done = fuspay_event(
        fuspay,
        "event.sell.credited.fiat",
        crypto_payment_status="PAID",
        fiat_payment_status="PAID",
        seller_crypto_txn_hash="0xfinal",
    )
    store.apply([done])
    (out,) = store.apply([late])
    assert out.decision.value == "stale"
    order = store.order_view("fuspay", "fz-1")
    assert order.status == "SUCCESS"
    assert order.details["fiat_payment_status"] == "PAID"
    assert order.details["tx_hash"] == "0xfinal"
    stale = order.events[-1]
    assert stale.decision == "stale" and "0xolder" in stale.raw_body  # kept in the history


def test_an_unknown_status_does_not_fix_the_amount(stack: Stack) -> None:
    fuspay = stack.runtime.adapters["fuspay"]
    store = stack.runtime.store
    (odd,) = store.apply([fuspay_event(fuspay, "event.sell.mystery", fiat_amount_to_receive=999)])
    assert odd.decision.value == "unknown_status"
    (real,) = store.apply([fuspay_event(fuspay, "event.sell.init", fiat_amount_to_receive=1000)])
    assert real.decision.value == "applied"
    order = store.order_view("fuspay", "fz-1")
    assert order.fiat_amount == "1000"
    assert [a.kind for a in order.anomalies] == ["unknown_status"]  # no amount_mismatch


# -- 2. an unsigned claim never reaches the partner's view


def _changelly_order(stack: Stack, order_id: str) -> str:
    resp = stack.api("POST", "/api/orders/changelly", json=changelly_sell(order_id))
    assert resp.status_code == 201, resp.text
    return resp.json()["provider_order_id"]


_settle_changelly = settle_changelly


def test_a_changelly_claim_is_shown_as_a_claim_never_as_state(stack: Stack) -> None:
    _changelly_order(stack, "claim-1")
    stack.changelly.advance("claim-1", "pending")
    _settle_changelly(stack)
    view = stack.api("GET", "/api/orders/changelly/claim-1").json()
    assert view["status"] == "PROCESSING"
    assert "claimed_status" not in view["details"]
    (callback,) = [e for e in view["timeline"] if e["source"] == "callback"]
    assert callback["provider_status"] is None and callback["claimed_status"] == "pending"
    assert "claimed: pending" in timeline_text(view)


def test_a_fuspay_unconfirmed_payout_is_a_claim_and_leaves_no_trace_in_details(stack: Stack) -> None:
    stack.fuspay.set_switches(drop=True)  # only polls reach us
    stack.fuspay.create_order("fz-claim", crypto_amount=100)
    stack.fuspay.advance("fz-claim", "event.sell.received.crypto")
    stack.fuspay.advance("fz-claim", "event.sell.credited.fiat", payout_status="PROCESSING")
    first = jobs.poll_order("fuspay", "fz-claim")
    assert first["provider_status"] == "event.sell.received.crypto"  # the payout is not confirmed
    view = stack.api("GET", "/api/orders/fuspay/fz-claim").json()
    assert "claimed_status" not in view["details"]
    (poll,) = [e for e in view["timeline"] if e["source"] == "poll"]
    assert poll["claimed_status"] == "event.sell.credited.fiat"
    stack.fuspay.advance("fz-claim", "event.sell.credited.fiat", payout_status="COMPLETED")
    assert jobs.poll_order("fuspay", "fz-claim")["status"] == "SUCCESS"
    view = stack.api("GET", "/api/orders/fuspay/fz-claim").json()
    assert "claimed_status" not in view["details"] and view["details"]["payout_status"] == "COMPLETED"


# -- 3. a poll answer older than the order's last change cannot undo it


def test_a_poll_fetched_before_a_hold_cannot_undo_it(stack: Stack) -> None:
    _changelly_order(stack, "hold-1")
    stack.changelly.advance("hold-1", "pending")
    _settle_changelly(stack)
    adapter = stack.runtime.adapters["changelly"]
    ref = stack.runtime.store.order_ref("changelly", "hold-1")
    early = adapter.poll("hold-1", kind=ref[0], provider_order_id=ref[1])  # fetched: pending
    assert early.provider_status == "pending"
    time.sleep(0.01)
    stack.changelly.advance("hold-1", "hold")
    _settle_changelly(stack)
    assert stack.runtime.store.order_view("changelly", "hold-1").status == "ON_HOLD"
    (late,) = stack.runtime.store.apply([early])  # applied after the hold
    assert late.decision.value in ("stale", "duplicate") and late.status.value == "ON_HOLD"
    assert stack.runtime.store.order_view("changelly", "hold-1").status == "ON_HOLD"


def test_one_poll_of_an_order_at_a_time(stack: Stack) -> None:
    stack.sandbox.create_order("one-at-a-time", 1000)
    stack.runtime.store.apply([stack.runtime.adapters["alixpay"].poll("one-at-a-time")])
    stack.sandbox.set_switches(detail_delay=1.0)
    results: dict[str, dict] = {}

    def slow() -> None:
        results["first"] = jobs.poll_order("alixpay", "one-at-a-time", "sweep")

    thread = threading.Thread(target=contextvars.copy_context().run, args=(slow,))
    thread.start()
    time.sleep(0.3)  # the first poll is waiting for the provider
    started = time.monotonic()
    results["second"] = jobs.poll_order("alixpay", "one-at-a-time", "callback")
    elapsed = time.monotonic() - started
    thread.join(10)
    stack.sandbox.set_switches(detail_delay=0.0)
    assert results["second"].get("deferred") is True, results["second"]
    assert elapsed < 0.5  # it did not wait for, nor race, the first one
    assert results["first"]["decision"] in ("duplicate", "confirmed")
    scheduled = ScheduledJobRegistry(POLLS, connection=stack.runtime.redis, serializer=JSONSerializer)
    assert scheduled.count == 1  # the deferred poll runs later: nothing is lost


# -- 4. one error policy


def test_an_unknown_provider_is_a_data_error(stack: Stack) -> None:
    event = Event(
        provider="nosuchpay",
        external_order_id="x-1",
        provider_status="DONE",
        source="callback",
        dedup_key="status:DONE",
        raw_body="{}",
        received_at=datetime.now(UTC).isoformat(),
    )
    with pytest.raises(ProviderDisabled):
        stack.runtime.store.apply([event])
    job_id = "event-nosuchpay"
    stack.runtime.queues._enqueue_unique(stack.runtime.queues.events, APPLY_JOB, (event.to_dict(),), job_id)
    stack.drain()
    job = Job.fetch(job_id, connection=stack.runtime.redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED  # at once: not scheduled for a retry
    assert "ProviderDisabled" in (job.latest_result().exc_string or "")


def test_a_callback_for_an_order_the_provider_does_not_know_fails_at_once(stack: Stack) -> None:
    order_id = "ffffffff-0000-4000-8000-000000000000"
    signature = changelly_signing.sign_callback(order_id, stack.changelly._callback_private_key)
    resp = requests.post(
        stack.base + "/webhooks/changelly",
        json={"orderId": order_id, "status": "complete"},
        headers={"X-Callback-Signature": signature},
        timeout=5,
    )
    assert resp.status_code == 200
    stack.drain()
    # Dead-lettered at once (bad data: no retry can help), not left pending for retries.
    (letter,) = DeadEvents(stack.runtime.redis).list()
    assert "ProviderRejected" in letter.error and "order not found" in letter.error
    assert stack.runtime.stream.depths() == {"callbacks": 0, "callbacks_pending": 0, "callbacks_dead": 1}
    assert stack.runtime.store.order_view("changelly", order_id) is None


# -- 5. replays are bounded


def test_identical_deliveries_are_counted_on_one_record(stack: Stack) -> None:
    stack.sandbox.create_order("replayed", 1000)
    stack.sandbox.callback_url = None  # we post it ourselves
    body = stack.sandbox.signed_order("replayed")
    for _ in range(5):
        resp = requests.post(stack.base + "/webhooks/alixpay", json=body, timeout=5)
        assert resp.status_code == 200
        stack.drain()
    order = stack.runtime.store.order_view("alixpay", "replayed")
    callbacks = [e for e in order.events if e.source == "callback"]
    assert len(callbacks) == 1
    assert callbacks[0].seen_count == 5 and callbacks[0].last_seen_at >= callbacks[0].received_at


def test_replayed_changelly_signatures_with_forged_bodies_are_bounded(stack: Stack) -> None:
    _changelly_order(stack, "forged")
    order = stack.changelly.order("forged")
    signature = changelly_signing.sign_callback(order["orderId"], stack.changelly._callback_private_key)
    for n in range(20):
        forged = {"orderId": order["orderId"], "status": "complete", "n": n, "noise": "x" * n}
        resp = requests.post(
            stack.base + "/webhooks/changelly",
            json=forged,
            headers={"X-Callback-Signature": signature},
            timeout=5,
        )
        assert resp.status_code == 200
    stack.drain()
    recorded = [
        e for e in stack.runtime.store.order_view("changelly", "forged").events if e.source == "callback"
    ]
    # One record; the deliveries the queue had not yet applied were one job already.
    assert len(recorded) == 1 and 1 <= recorded[0].seen_count <= 20


def test_store_counts_a_replay_without_a_new_row(stack: Stack) -> None:
    store: Store = stack.runtime.store
    fuspay = stack.runtime.adapters["fuspay"]
    event = fuspay_event(fuspay, "event.sell.init")
    outs = [store.apply([event])[0] for _ in range(3)]
    assert [o.decision.value for o in outs] == ["applied", "duplicate", "duplicate"]
    order = store.order_view("fuspay", "fz-1")
    assert len(order.events) == 1 and order.events[0].seen_count == 3 and order.version == 1


# -- healing polls (issue 8, item 7)


def test_forgeries_naming_finished_orders_cannot_use_up_the_healing_of_open_ones(stack: Stack) -> None:
    from orders.events import COVERS_ALL

    now = datetime.now(UTC).isoformat()
    finished = [f"done-{i:03d}" for i in range(130)]
    stack.runtime.store.apply(
        [
            Event(
                provider="alixpay",
                external_order_id=oid,
                provider_status="SUCCESS",
                source="poll",
                dedup_key="status:SUCCESS",
                raw_body=oid,
                received_at=now,
                fetched_at=now,
                covers=COVERS_ALL,
            )
            for oid in finished
        ]
    )
    stack.sandbox.create_order("heal-open", 1000)
    stack.runtime.store.apply([stack.runtime.adapters["alixpay"].poll("heal-open")])
    forged = {"type": "sell", "fiatAmount": 1000, "status": "SUCCESS", "signature": "Zm9yZ2Vk"}
    for oid in [*finished, "heal-open"]:
        resp = requests.post(
            stack.base + "/webhooks/alixpay", json={**forged, "externalOrderId": oid}, timeout=5
        )
        assert resp.status_code == 401
    stack.drain()
    polls = [e for e in stack.runtime.store.order_view("alixpay", "heal-open").events if e.source == "poll"]
    # the one above, and the healing poll (the same answer: counted on its record)
    assert sum(e.seen_count for e in polls) == 2
    for oid in finished[:3]:
        assert [e.source for e in stack.runtime.store.order_view("alixpay", oid).events] == ["poll"]
