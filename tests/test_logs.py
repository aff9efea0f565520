"""Personal data and bodies never reach the logs, nor RQ's failed registry, on any error path.

The case found by trying: a database write that fails puts SQLAlchemy's bound
parameters (an event's raw body: e-mail, phone, name) into the exception text,
which RQ logs and keeps. Here a trigger makes every insert into ``events`` fail,
on SQLite and PostgreSQL, and a Fuspay event carrying personal data is applied
by a real worker.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from conftest import Stack
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import create_engine, text

from orders.providers.fuspay.signing import sign, unsigned
from orders.providers.jsformat import js_stringify
from workers.queue import EVENTS

PERSONAL = ("ada.obi@example.com", "+2348099887766", "Obianuju", "0123498765")


def _break_event_inserts(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER no_events BEFORE INSERT ON events "
                    "BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION no_events() RETURNS trigger AS "
                    "$$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER no_events BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION no_events()"
                )
            )
    engine.dispose()


def test_a_failing_database_write_logs_no_personal_data(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The personal data first: SQLAlchemy shows the start and the end of a long parameter.
    body = {
        "transactional_kyc": {"email": PERSONAL[0], "phone": PERSONAL[1], "first_name": PERSONAL[2]},
        "seller_fiat_account": {"account_number": PERSONAL[3]},
        "event_name": "event.sell.init",
        "partner_order_id": "pii-1",
        "fuspay_order_ref": "pii-1_p176517",
        "fiat_amount_to_receive": 1000,
        "crypto_amount_to_sell": 100,
        "chain": "usdt-trc20",
    }
    body["signature"] = sign(unsigned(body), "pk_partner_test_0001sk_partner_test_0001", "hmac-sha512")
    event = stack.runtime.adapters["fuspay"].parse_callback(
        js_stringify(body).encode(), {}, datetime.now(UTC)
    )
    _break_event_inserts(stack.settings.database_url)
    job_id = stack.runtime.queues.enqueue_event(event)
    stack.drain()

    job = Job.fetch(job_id, connection=stack.runtime.redis, serializer=JSONSerializer)
    kept = job.latest_result().exc_string if job.latest_result() else ""
    assert job.get_status() in ("scheduled", "failed") and "the disk is full" in (kept or caplog.text)
    for secret in PERSONAL:
        assert secret not in caplog.text, secret
        assert secret not in (kept or ""), secret
    failed = FailedJobRegistry(EVENTS, connection=stack.runtime.redis)
    for failed_id in failed.get_job_ids():
        text_kept = Job.fetch(failed_id, connection=stack.runtime.redis, serializer=JSONSerializer)
        for secret in PERSONAL:
            assert secret not in str(text_kept.latest_result().exc_string), secret
