"""Operator repairs from the command line: replay, anomalies, dead letters, notifications.

Real components: the writer on SQLite and PostgreSQL, the private Redis, a real RQ
worker for the jobs, a partner endpoint on loopback for a redelivery."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import PERSONAL, alix_event, base_env, changelly_claim, run, store_for
from recorders import WsgiLoopback
from redis import Redis
from rq.job import Job
from sqlalchemy import select
from werkzeug.wrappers import Request, Response

from config import Named, Settings
from orders.events import Event
from orders.models import EventRecord, Notification
from workers.queue import APPLY_JOB, Queues
from workers.services import build_services
from workers.worker import make_worker


def test_replay_goes_through_the_writer_and_trusts_no_more_than_the_record(
    database_url: str, redis: Redis, tmp_path: Path
) -> None:
    store = store_for(database_url)
    store.apply([alix_event("r-1", "AWAITING_PAYMENT"), changelly_claim("c-1", "ch-1", "complete")])
    store.apply([changelly_claim("c-2", "ch-2", None)])
    with store.sessions() as s:
        records = list(s.scalars(select(EventRecord).order_by(EventRecord.id)))
    alix, claim, trigger = records
    env = base_env(database_url, redis)
    done = run(["replay", str(alix.id)], env, tmp_path)
    assert done.exit_code == 0, done.stderr
    assert done.stdout.strip() == (
        f"event {alix.id} (AWAITING_PAYMENT) replayed on alixpay r-1: duplicate; now AWAITING_PAYMENT v1"
    )
    again = json.loads(run(["replay", str(alix.id), "--json"], env, tmp_path).stdout)
    assert again["replayed_before"] is True and again["version"] == 1
    # the unsigned claim "complete" stays a claim: recorded, never the order's state
    claimed = json.loads(run(["replay", str(claim.id), "--json"], env, tmp_path).stdout)
    assert (claimed["decision"], claimed["status"], claimed["version"]) == ("recorded", "CREATED", 0)
    with store.sessions() as s:
        replays = list(
            s.scalars(select(EventRecord).where(EventRecord.source == "replay").order_by(EventRecord.id))
        )
    assert [(r.provider_status, r.claimed_status, r.seen_count) for r in replays] == [
        ("AWAITING_PAYMENT", None, 2),
        (None, "complete", 1),
    ]
    assert replays[0].covers == "provider_status,fiat_amount"  # kind is not kept on a record
    assert replays[0].verified_by == alix.verified_by and replays[1].covers is None
    refused = run(["replay", str(trigger.id)], env, tmp_path)
    assert refused.exit_code == 1 and "nothing to replay" in refused.stderr
    missing = run(["replay", "999999"], env, tmp_path)
    assert missing.exit_code == 1 and missing.stderr == "rampwatch replay: no event 999999\n"


def test_anomalies_list_and_resolve(database_url: str, redis: Redis, tmp_path: Path) -> None:
    store = store_for(database_url)
    store.apply([alix_event("x-1", "SUCCESS")])
    store.apply([alix_event("x-1", "FAIL")])  # a second terminal: a conflict
    store.apply([alix_event("x-2", "WHATEVER")])  # unknown status
    env = base_env(database_url, redis)
    listed = run(["anomalies", "list"], env, tmp_path)
    assert listed.exit_code == 0
    rows = listed.stdout.splitlines()[1:]
    assert [r.split()[1:4] for r in rows] == [
        ["unknown_status", "alixpay", "x-2"],
        ["conflict", "alixpay", "x-1"],
    ]
    conflict = json.loads(run(["anomalies", "list", "--kind", "conflict", "--json"], env, tmp_path).stdout)
    (item,) = conflict["anomalies"]
    done = run(
        ["anomalies", "resolve", str(item["id"]), "--comment", "AliX confirmed SUCCESS"], env, tmp_path
    )
    assert done.exit_code == 0 and "resolved" in done.stdout
    assert [
        a["kind"] for a in json.loads(run(["anomalies", "list", "--json"], env, tmp_path).stdout)["anomalies"]
    ] == ["unknown_status"]
    every = json.loads(run(["anomalies", "list", "--all", "--json"], env, tmp_path).stdout)["anomalies"]
    assert [a["resolution"] for a in every] == [None, "AliX confirmed SUCCESS"]
    twice = run(["anomalies", "resolve", str(item["id"]), "--comment", "again"], env, tmp_path)
    assert twice.exit_code == 1 and "was resolved at" in twice.stderr
    assert run(["anomalies", "resolve", "424242", "--comment", "x"], env, tmp_path).exit_code == 1


def _settings(database_url: str, redis: Redis, **extra: object) -> Settings:
    port = redis.connection_pool.connection_kwargs["port"]
    return Settings(database_url=database_url, redis_url=f"redis://127.0.0.1:{port}/0", **extra)  # type: ignore[arg-type]


def test_dlq_lists_without_raw_bodies_requeues_and_purges(
    database_url: str, redis: Redis, tmp_path: Path
) -> None:
    services = build_services(_settings(database_url, redis), redis=redis, adapters={})
    queues = Queues(redis)
    # a provider no store knows: a data error, failed at once by a real worker
    bad = alix_event("d-1", "SUCCESS")
    payload = {**bad.to_dict(), "provider": "nopay"}
    queues.events.enqueue_call(APPLY_JOB, args=(payload,), job_id="event-nopay-1", failure_ttl=3600)
    services.install()
    make_worker(services).work(burst=True)
    env = base_env(database_url, redis)
    listed = run(["dlq", "list"], env, tmp_path)
    assert listed.exit_code == 0
    assert "event-nopay-1" in listed.stdout and "apply_event" in listed.stdout
    assert "provider=nopay" in listed.stdout and "external_order_id=d-1" in listed.stdout
    assert "ProviderDisabled" in listed.stdout
    assert PERSONAL not in listed.stdout and "raw_body" not in listed.stdout
    (letter,) = json.loads(run(["dlq", "list", "--json"], env, tmp_path).stdout)["dead_letters"]
    assert letter["source"] == "rq:events" and letter["failed_at"]
    assert PERSONAL not in json.dumps(letter)
    assert run(["dlq", "requeue"], env, tmp_path).exit_code == 2
    assert run(["dlq", "requeue", "no-such-job"], env, tmp_path).exit_code == 1
    requeued = run(["dlq", "requeue", "event-nopay-1"], env, tmp_path)
    assert requeued.stdout.strip() == "requeued rq:events event-nopay-1"
    assert "event-nopay-1" in queues.events.job_ids
    make_worker(services).work(burst=True)  # fails again
    kept = run(["dlq", "purge"], env, tmp_path, input="n\n")
    assert kept.exit_code == 1 and queues.events.failed_job_registry.count == 1
    purged = run(["dlq", "purge", "--yes"], env, tmp_path)
    assert purged.stdout.strip() == "1 dead letter(s) purged"
    assert queues.events.failed_job_registry.count == 0
    assert not Job.exists("event-nopay-1", connection=redis)
    services.store.engine.dispose()


@pytest.fixture
def partner() -> Iterator[tuple[str, list[bytes]]]:
    """A partner endpoint on loopback that acknowledges every notification."""
    received: list[bytes] = []

    @Request.application
    def app(request: Request) -> Response:
        received.append(request.get_data())
        return Response("ok")

    with WsgiLoopback(app) as server:
        yield f"{server.base}/hooks", received


def test_notifications_list_and_redeliver_a_dead_one(
    database_url: str, redis: Redis, tmp_path: Path, partner: tuple[str, list[bytes]]
) -> None:
    url, received = partner
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    store = store_for(database_url)
    (outcome,) = store.apply([alix_event("n-1", "AWAITING_PAYMENT")])
    with store.sessions() as s:
        note = s.scalars(select(Notification)).one()
    store.notification_failed(note.id, "HTTP 500", None)  # dead-lettered
    env = {**base_env(database_url, redis), "NOTIFY_URL": url, "NOTIFY_SECRET": secret}
    failed = run(["notifications", "list", "--failed"], env, tmp_path)
    _, row = failed.stdout.splitlines()
    assert row.split()[:7] == [str(note.id), "alixpay", "n-1", "order.status_changed", "1", "0", "dead"]
    assert row.endswith("HTTP 500")
    assert (
        json.loads(
            run(["notifications", "list", "--order", "changelly", "n-1", "--json"], env, tmp_path).stdout
        )["notifications"]
        == []
    )
    done = run(["notifications", "redeliver", str(note.id)], env, tmp_path)
    assert done.exit_code == 0, done.stderr
    assert "is due again; delivery of its order queued" in done.stdout
    assert f"notify-{outcome.order_id}" in Queues(redis).notifications.job_ids
    settings = _settings(
        database_url, redis, notify_url=url, notify_secrets=(Named("NOTIFY_SECRET", secret),)
    )
    services = build_services(settings, redis=redis, adapters={})
    services.install()
    make_worker(services).work(burst=True)
    assert len(received) == 1 and json.loads(received[0])["data"]["external_order_id"] == "n-1"
    (state,) = json.loads(run(["notifications", "list", "--json"], env, tmp_path).stdout)["notifications"]
    assert (state["state"], state["attempts"], state["dead_at"]) == ("delivered", 1, None)
    again = run(["notifications", "redeliver", str(note.id)], env, tmp_path)
    assert again.exit_code == 1 and "was delivered at" in again.stderr
    services.store.engine.dispose()


def test_an_event_payload_stays_an_event(tmp_path: Path) -> None:
    # the dlq summary reads the event contract's own field names
    from workers.deadletters import EVENT_FIELDS, summarise

    fields = set(Event.__dataclass_fields__)
    assert set(EVENT_FIELDS) <= fields
    summary = summarise("workers.jobs.apply_event", [alix_event("s-1", "SUCCESS").to_dict()])
    assert "s-1" in summary and PERSONAL not in summary and "raw_body" not in summary
