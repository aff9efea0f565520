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
from dataclasses import dataclass
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
    queued = request_poll(provider, external_order_id, reason="api")
    if not query["wait"]:
        return jsonify({"status": "queued" if queued else "already queued"}), 202
    outcome = wait_for_poll(provider, external_order_id)
    return jsonify(outcome.body()), outcome.http_status


@dataclass(frozen=True)
class PollOutcome:
    """What waiting for an operator's poll came to (see the module docstring)."""

    status: str  # polled, deferred, retrying, pending
    http_status: int
    detail: str | None = None
    order: dict[str, Any] | None = None  # polled: the order's status, version, provider status, decision

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.detail is not None:
            out["detail"] = self.detail
        if self.order is not None:
            out["order"] = self.order
        return out


def request_poll(provider: str, external_order_id: str, *, reason: str) -> bool:
    """Queue a poll of a known order (the API's and the console's reconcile); False when
    one is already queued or running. Raises ProviderDisabled, InvalidPayload (an id no
    order can have) or OrderNotFound before anything is queued."""
    adapter_for(provider)
    oid = order_id(external_order_id)
    if not reader().exists(provider, oid):
        raise OrderNotFound(f"no {provider} order {external_order_id}")
    return current_app.extensions["rampwatch"].queues.enqueue_poll(provider, oid, reason=reason)


def wait_for_poll(provider: str, external_order_id: str) -> PollOutcome:
    """Wait, at most the app's ``reconcile_wait``, for the order's poll job; raises
    PollFailed when it failed for good."""
    wait = current_app.extensions.get("rampwatch.reconcile_wait", RECONCILE_WAIT)
    redis = current_app.extensions["rampwatch"].redis
    return _outcome(redis, poll_job_id(provider, external_order_id), time.monotonic() + wait, wait)


def _outcome(redis: Redis, job_id: str, deadline: float, wait: float) -> PollOutcome:
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
            return PollOutcome(
                "retrying", 202, f"the poll failed ({_failure(job)}) and is retried on its schedule"
            )
        if time.monotonic() >= deadline:
            return PollOutcome("pending", 202, f"the poll did not finish within {wait:g} s; it stays queued")
        time.sleep(CHECK_EVERY)


def _finished(result: dict[str, Any]) -> PollOutcome:
    if result.get("deferred"):
        return PollOutcome(
            "deferred",
            202,
            "another poll of this order was under way; one more is scheduled in a few seconds",
        )
    order = {k: result.get(k) for k in ("status", "version", "provider_status", "decision")}
    return PollOutcome("polled", 200, order=order)


def _failure(job: Job) -> str:
    """The exception's class only: its text may carry what a provider answered."""
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or ""
    last = text.strip().splitlines()[-1] if text.strip() else ""
    return last.partition(":")[0].rsplit(".", 1)[-1] or "unknown error"
