"""``/metrics``: counts from many processes summed through Redis, gauges computed at scrape.

Real Redis (the private server), real processes for the cross-process sum, the real
stack (HTTP, sandboxes, RQ worker) for what the layers count, SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from conftest import E2E_TOKEN, Stack
from notify_receiver import PartnerReceiver
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy import create_engine, text
from test_log_format import _fuspay_body

from config import Named, Settings
from config.metrics import Metrics, key
from orders.providers import STATUS_MAPS
from orders.store import Store
from receiver import create_app
from receiver.metrics import render
from workers.queue import EVENTS, QUEUE_NAMES
from workers.stream import STREAM

OPS_TOKEN = "ops-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from Prometheus text."""
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def scrape(stack: Stack) -> dict:
    resp = requests.get(stack.base + "/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    return samples(resp.text)


@pytest.fixture
def ops(stack: Stack) -> Stack:
    stack.web.settings = replace(stack.web.settings, ops_token=OPS_TOKEN)
    return stack


# ------------------------------------------------------------------ counting and flushing


COUNTER_PROCESS = textwrap.dedent(
    """
    import sys, threading
    from redis import Redis
    from config.metrics import Metrics

    metrics = Metrics(Redis.from_url(sys.argv[1]), interval=0.05)
    metrics.start()
    def count():
        for _ in range(250):
            metrics.inc("rampwatch_callbacks", provider="alixpay", outcome="accepted")
    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    metrics.inc("rampwatch_polls", provider="fuspay", outcome=sys.argv[2])
    # no explicit flush: the thread and the flush at exit must carry every count
    """
)


def test_two_processes_count_and_one_scrape_sees_the_sum(redis: Redis, database_url: str) -> None:
    url = "redis://127.0.0.1:{}/0".format(redis.connection_pool.connection_kwargs["port"])
    procs = [
        subprocess.Popen([sys.executable, "-c", COUNTER_PROCESS, url, outcome], cwd=ROOT)
        for outcome in ("applied", "failed")
    ]
    assert [p.wait(timeout=30) for p in procs] == [0, 0]
    settings = Settings(database_url=database_url, redis_url=url, ops_token=OPS_TOKEN)
    app = create_app(settings, redis=redis)
    app.extensions["rampwatch"].metrics.inc("rampwatch_callbacks", provider="alixpay", outcome="accepted")
    client = app.test_client()
    body = client.get("/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"}).get_data(as_text=True)
    found = samples(body)
    # 2 processes x 4 threads x 250, and the scraping process's own pending one
    assert value(found, "rampwatch_callbacks_total", provider="alixpay", outcome="accepted") == 2001
    assert value(found, "rampwatch_polls_total", provider="fuspay", outcome="applied") == 1
    assert value(found, "rampwatch_polls_total", provider="fuspay", outcome="failed") == 1
    assert value(found, "rampwatch_metrics_source_up", source="redis") == 1
    assert value(found, "rampwatch_metrics_source_up", source="database") == 1
    app.extensions["rampwatch"].store.engine.dispose()


def test_a_flush_that_fails_keeps_its_counts(redis: Redis) -> None:
    down = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    metrics = Metrics(down)
    metrics.inc("rampwatch_notifications", outcome="delivered")
    metrics.inc("rampwatch_notifications", 2, outcome="delivered")
    assert metrics.flush() is False
    metrics.inc("rampwatch_notifications", outcome="dead")
    assert metrics.pending() == {
        ("rampwatch_notifications", "delivered"): 3,
        ("rampwatch_notifications", "dead"): 1,
    }
    metrics.redis = redis
    assert metrics.flush() is True and metrics.pending() == {}
    assert redis.hgetall(key("rampwatch_notifications")) == {b"delivered": b"3", b"dead": b"1"}


def test_counting_never_raises_and_labels_stay_tokens(redis: Redis) -> None:
    metrics = Metrics(redis)
    metrics.inc("rampwatch_nonexistent", outcome="x")
    metrics.inc("rampwatch_polls", provider="alixpay")  # a label missing
    metrics.inc("rampwatch_callbacks", provider="ada.obi@example.com", outcome="a b")
    metrics.inc("rampwatch_callbacks", provider="x" * 65, outcome="accepted")
    assert metrics.pending() == {
        ("rampwatch_callbacks", "other|other"): 1,
        ("rampwatch_callbacks", "other|accepted"): 1,
    }


def test_metrics_need_the_operators_token(ops: Stack) -> None:
    url = ops.base + "/metrics"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"Authorization": f"Bearer {E2E_TOKEN}"}, timeout=5).status_code == 403
    assert (
        requests.get(url, headers={"Authorization": "Bearer nope-nope-nope-nope"}, timeout=5).status_code
        == 401
    )
    assert "rampwatch_callbacks_total" not in requests.get(url, timeout=5).text


def test_an_unreadable_database_leaves_its_gauges_out(redis: Redis, tmp_path: Path) -> None:
    broken = Store(create_engine(f"sqlite:///{tmp_path}/missing/nowhere.db"), STATUS_MAPS, {})
    queues = [Queue(n, connection=redis) for n in QUEUE_NAMES]
    found = samples(render(redis, broken, queues).decode())
    assert value(found, "rampwatch_metrics_source_up", source="database") == 0
    assert value(found, "rampwatch_metrics_source_up", source="redis") == 1
    assert value(found, "rampwatch_queue_depth", queue="events") == 0
    assert not any(name == "rampwatch_open_orders" for name, _ in found)


# ------------------------------------------------------------------ what the layers count


def test_one_scrape_shows_what_the_web_and_the_workers_did(ops: Stack) -> None:
    stack = ops
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with PartnerReceiver([secret]) as partner:
        pushing = replace(
            stack.settings, notify_url=partner.url, notify_secrets=(Named("NOTIFY_SECRET", secret),)
        )
        stack.runtime.settings = pushing
        for order_id in ("m-1", "m-2"):
            body = {
                "externalOrderId": order_id,
                "currency": "USDT",
                "network": "TRC20",
                "fiatAmount": 1_000_000,
                "bankCode": "VCB",
                "bankAccountNumber": "0123456789",
                "bankAccountName": "NGUYEN VAN A",
            }
            assert stack.api("POST", "/api/orders/alixpay", json=body).status_code == 201
        for status in ("PAYMENT_COMPLETED", "SUCCESS"):
            stack.sandbox.advance("m-1", status)
        assert stack.sandbox.wait_idle(10)
        headers = {"Content-Type": "application/json"}
        forged = requests.post(
            stack.base + "/webhooks/fuspay",
            data=_fuspay_body("m-9", signed=False),
            headers=headers,
            timeout=5,
        )
        assert forged.status_code == 401
        stack.drain()
        stack.runtime.queues.enqueue_poll("alixpay", "m-2", "operator")
        stack.drain()
        assert partner.wait_for(2)
    # One failed job, one waiting poll, one stuck order.
    Queue(EVENTS, connection=stack.runtime.redis, serializer=JSONSerializer).enqueue(
        "workers.jobs.apply_event", {"v": 99}, job_id="broken-1"
    )
    stack.drain()
    # One callback dead-lettered (unreadable), one waiting on the stream.
    stack.runtime.redis.xadd(STREAM, {b"e": b"{not json"})
    stack.drain()
    stack.runtime.redis.xadd(STREAM, {b"e": b"{}"})
    stack.runtime.queues.enqueue_poll("alixpay", "m-2", "sweep")
    engine = create_engine(stack.settings.database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE orders SET stuck_at = created_at WHERE external_order_id = 'm-2'"))
    engine.dispose()

    stack.runtime.metrics.flush()  # the worker's thread would, within FLUSH_INTERVAL
    found = scrape(stack)
    ipns = sum(1 for o, _s, code in stack.sandbox.deliveries if o == "m-1" and code == 200)
    assert ipns >= 2
    assert value(found, "rampwatch_callbacks_total", provider="alixpay", outcome="accepted") == ipns
    assert value(found, "rampwatch_callbacks_total", provider="fuspay", outcome="invalid_signature") == 1
    assert value(found, "rampwatch_verification_failures_total", provider="fuspay") == 1
    assert value(found, "rampwatch_transitions_total", provider="alixpay", to_status="SUCCESS") == 1
    assert value(found, "rampwatch_transitions_total", provider="alixpay", to_status="PROCESSING") == 1
    # The creations' answers were applied by the web process itself: counted as well.
    assert value(found, "rampwatch_transitions_total", provider="alixpay", to_status="AWAITING_PAYMENT") == 2
    applied = value(
        found, "rampwatch_events_total", provider="alixpay", source="callback", decision="applied"
    )
    assert applied == 2
    assert value(found, "rampwatch_polls_total", provider="alixpay", outcome="unchanged") == 1
    delivered = value(found, "rampwatch_notifications_total", outcome="delivered")
    assert delivered is not None and delivered >= 2
    assert value(found, "rampwatch_queue_depth", queue="polls") == 1
    assert value(found, "rampwatch_queue_depth", queue="events") == 0
    assert value(found, "rampwatch_failed_jobs", queue="events") == 1
    assert value(found, "rampwatch_callback_stream", state="waiting") == 1
    assert value(found, "rampwatch_callback_stream", state="pending") == 0
    assert value(found, "rampwatch_callback_stream", state="dead") == 1
    assert value(found, "rampwatch_callbacks_dead_lettered_total", provider="unknown") == 1
    assert value(found, "rampwatch_open_orders", provider="alixpay", status="AWAITING_PAYMENT") == 1
    assert value(found, "rampwatch_open_orders", provider="alixpay", status="SUCCESS") is None
    assert value(found, "rampwatch_stuck_orders", provider="alixpay") == 1
    age = value(found, "rampwatch_oldest_open_order_age_seconds", provider="alixpay")
    assert age is not None and 0 <= age < 120
    # The web's counts are in the web process until it flushes: the scrape did.
    assert stack.web.metrics.pending() == {}
    assert stack.runtime.metrics.pending() == {}
