"""Reconcile one order now (operator): queue a poll of it, and with ``?wait=1`` wait
for that poll's outcome.

An order we do not know is a 404 before anything is queued (a poll of it could
only fail in a worker). The poll is the queue's one job for the order
(``workers.queue.poll_job_id``): one already queued or running is the one waited
for. The wait is bounded (``RECONCILE_WAIT``, 15 s, well under gunicorn's 30 s
timeout) and reads the job's state from Redis a few times a second:

* the poll finished: 200 ``polled`` with the order's status, version, provider
  status and the decision the answer got;
* another poll of the order held it: 202 ``deferred`` (a poll is scheduled
  seconds later; the order view shows its outcome);
* the provider did not answer: 202 ``retrying`` (RQ retries it on its schedule);
* it failed for good (e.g. the provider does not know the order): 502 ``poll_failed``;
* the wait ran out: 202 ``pending`` (the poll stays queued).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from orders.errors import OrderNotFound
from receiver.api.common import adapter_for, order_id, reader
from receiver.auth import requires
from receiver.errors import PollFailed
from receiver.schemas import RECONCILE_QUERY, load_query
from workers.queue import poll_job_id

bp = Blueprint("reconcile", __name__)

RECONCILE_WAIT = 15.0  # seconds; create_app(reconcile_wait=...) for tests
CHECK_EVERY = 0.1


@bp.post("/orders/<provider>/<external_order_id>/reconcile")
@requires("ops")
def reconcile(provider: str, external_order_id: str) -> Any:
    query = load_query(RECONCILE_QUERY, request.args)
    deps = current_app.extensions["rampwatch"]
    adapter_for(provider)
    oid = order_id(external_order_id)
    if not reader().exists(provider, oid):
        raise OrderNotFound(f"no {provider} order {external_order_id}")
    queued = deps.queues.enqueue_poll(provider, oid, reason="api")
    if not query["wait"]:
        return jsonify({"status": "queued" if queued else "already queued"}), 202
    wait = current_app.extensions.get("rampwatch.reconcile_wait", RECONCILE_WAIT)
    return _outcome(deps.redis, poll_job_id(provider, oid), time.monotonic() + wait, wait)


def _outcome(redis: Redis, job_id: str, deadline: float, wait: float) -> Any:
    while True:
        try:
            job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
            status = job.get_status(refresh=True)
        except NoSuchJobError:
            status = None  # between a finished job's deletion and its re-enqueueing
        if status == JobStatus.FINISHED:
            return _finished(job.return_value(refresh=True) or {})
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            raise PollFailed(f"the poll failed ({_failure(job)}); the order is unchanged")
        if status == JobStatus.SCHEDULED:  # a retry waits: the provider did not answer
            return jsonify(
                {
                    "status": "retrying",
                    "detail": f"the poll failed ({_failure(job)}) and is retried on its schedule",
                }
            ), 202
        if time.monotonic() >= deadline:
            return jsonify(
                {"status": "pending", "detail": f"the poll did not finish within {wait:g} s; it stays queued"}
            ), 202
        time.sleep(CHECK_EVERY)


def _finished(result: dict[str, Any]) -> Any:
    if result.get("deferred"):
        return jsonify(
            {
                "status": "deferred",
                "detail": "another poll of this order was under way; one more is scheduled in a few seconds",
            }
        ), 202
    order = {k: result.get(k) for k in ("status", "version", "provider_status", "decision")}
    return jsonify({"status": "polled", "order": order})


def _failure(job: Job) -> str:
    """The exception's class only: its text may carry what a provider answered."""
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or ""
    last = text.strip().splitlines()[-1] if text.strip() else ""
    return last.partition(":")[0].rsplit(".", 1)[-1] or "unknown error"
