"""Queues and enqueueing: the one module the receiver may import from ``workers``.

Jobs are referenced by dotted name (the receiver never imports job code), carry
versioned JSON of primitives (RQ's JSON serializer on both sides) and have
deterministic ids, so the same callback delivered twice is one job. RQ's
``unique`` is the first line of dedup; the store's unique index is the guarantee.

A job id that already exists is treated by its state: queued, scheduled or
running means "already accepted"; failed, stopped or canceled means the earlier
attempt did not apply, so it is requeued (dedup must not swallow a retry after
a failed apply); finished is deleted and enqueued anew. A job running on a worker
that died (``workers.liveness``) counts as failed at once: it is requeued.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from datetime import timedelta
from typing import Any

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError, RedisError
from redis.lock import Lock
from redis.retry import Retry as RedisRetry
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from orders.events import Event
from workers.liveness import break_if_dead, lock_token, reclaim

log = logging.getLogger("rampwatch.queue")

EVENTS = "events"
POLLS = "polls"
NOTIFICATIONS = "notifications"
CONTROL = "control"
# A worker takes jobs in this order of priority. The sweep (control) comes first: it is one
# short job per RAMPWATCH_SWEEP_INTERVAL and must keep its cadence whatever the backlog
# (behind the events it waited for every worker to empty the other queues).
QUEUE_NAMES = (CONTROL, EVENTS, POLLS, NOTIFICATIONS)

APPLY_JOB = "workers.jobs.apply_event"
POLL_JOB = "workers.jobs.poll_order"
POLL_BATCH_JOB = "workers.jobs.poll_batch"
SWEEP_JOB = "workers.jobs.sweep"
HEAL_JOB = "workers.jobs.poll_if_known"
DELIVER_JOB = "workers.jobs.deliver_notifications"
DELIVER_MANY_JOB = "workers.jobs.deliver_notifications_of"

SWEEP_JOB_ID = "sweep"
# A job's Redis record outlives its run briefly for inspection; durable history is the store's.
RESULT_TTL = 60
FAILURE_TTL = 30 * 86400
JOB_TIMEOUT = 120
APPLY_RETRY = Retry(max=5, interval=[1, 5, 30, 120, 600])
POLL_RETRY = Retry(max=2, interval=[10, 60])
# A delivery job retries only trouble of its own (database, Redis): a failed HTTP attempt
# is recorded on the notification and retried on NOTIFY_BACKOFF (``workers.notify``).
DELIVER_RETRY = Retry(max=2, interval=[5, 30])
DELIVER_AGAIN = 1  # seconds: a delivery asked for while the order's runs is scheduled this much later

POLL_DEFER = 5  # seconds: a poll asked for while another runs is scheduled this much later

HEAL_WINDOW = 60  # seconds: at most one healing poll per order per window
HEAL_QUEUED_PER_WINDOW = 600  # healing jobs queued per window, across all orders
HEAL_POLLS_PER_WINDOW = 120  # provider calls they may make per window (open orders only)


def connect(
    url: str, *, timeout: float = 2.0, tls_verify: str = "required", retry: RedisRetry | None = None
) -> Redis:
    """A Redis client with bounded timeouts and two quick retries (well under a second
    in all), so a webhook answers 503 promptly when Redis is down instead of waiting
    out redis-py's default backoff. Workers and the clock pass a patient ``retry``
    instead (``workers.outages.connect_patient``).

    For ``rediss://``, ``tls_verify`` (``REDIS_TLS_VERIFY``) is how the server's
    certificate is checked: ``required``, or ``none`` for a hosted Redis whose
    certificate is self-signed."""
    # redis-py's plain connection class refuses ssl_* arguments: pass them for TLS only.
    tls = {"ssl_cert_reqs": tls_verify} if url.startswith("rediss://") else {}
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=retry or RedisRetry(ExponentialBackoff(cap=0.25, base=0.05), 2),
        health_check_interval=30,
        **tls,
    )


class RedisTLSVerifyFailed(RedisConnectionError):
    """The Redis server's TLS certificate did not verify; the message names the setting."""


def tls_verify_failure(exc: BaseException) -> str | None:
    """What to tell an operator when ``exc`` is a failed certificate check, else None.

    redis-py wraps the ``ssl`` error in its own ConnectionError (the original is
    its ``__context__``), so the chain is searched, then the message."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return _tls_message(seen.verify_message or "certificate verify failed")
        seen = seen.__cause__ or seen.__context__
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return _tls_message("certificate verify failed")
    return None


def _tls_message(reason: str) -> str:
    return (
        f"Redis TLS certificate verification failed for REDIS_URL ({reason}); "
        "hosted Redis with a self-signed certificate needs REDIS_TLS_VERIFY=none"
    )


def check_tls_at_start(redis: Redis) -> None:
    """Ping once at start-up; raise RedisTLSVerifyFailed if the certificate does not verify.

    Retrying cannot fix a certificate, so that one stops the process with a message
    naming the setting. Any other Redis error is left to the caller's own policy
    (the clock retries, the web answers 503 until Redis is back)."""
    try:
        redis.ping()
    except RedisError as exc:
        message = tls_verify_failure(exc)
        if message is not None:
            raise RedisTLSVerifyFailed(message) from exc


def short_hash(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


def event_job_id(event: Event) -> str:
    return f"event-{event.provider}-{event.fingerprint()}"


def poll_job_id(provider: str, external_order_id: str) -> str:
    return f"poll-{provider}-{short_hash(provider, external_order_id)}"


def poll_batch_job_id(provider: str, external_order_ids: list[str]) -> str:
    """``polls-<provider>-<how many orders>-<hash of them>``: the size is read back by
    ``Queues.queued_polls``."""
    return f"polls-{provider}-{len(external_order_ids)}-{short_hash(provider, *external_order_ids)}"


def orders_in(job_id: str) -> int:
    """How many orders a job of the polls queue polls: a batch says it in its id, others one."""
    parts = job_id.split("-")
    if parts[0] == "polls" and len(parts) == 4 and parts[2].isdigit():
        return int(parts[2])
    return 1


class Queues:
    """The project's RQ queues on one Redis connection."""

    def __init__(self, redis: Redis):
        self.redis = redis
        self.events = Queue(EVENTS, connection=redis, serializer=JSONSerializer)
        self.polls = Queue(POLLS, connection=redis, serializer=JSONSerializer)
        self.notifications = Queue(NOTIFICATIONS, connection=redis, serializer=JSONSerializer)
        self.control = Queue(CONTROL, connection=redis, serializer=JSONSerializer)

    def all(self) -> list[Queue]:
        """Every queue, in a worker's order of priority (``QUEUE_NAMES``)."""
        by_name = {q.name: q for q in (self.control, self.events, self.polls, self.notifications)}
        return [by_name[name] for name in QUEUE_NAMES]

    def enqueue_event(self, event: Event) -> str:
        """Queue ``event`` for ``apply``; returns its job id. Raises redis errors."""
        job_id = event_job_id(event)
        self._enqueue_unique(
            self.events,
            APPLY_JOB,
            (event.to_dict(),),
            job_id,
            retry=APPLY_RETRY,
            description=_describe(event),
        )
        return job_id

    def enqueue_poll(self, provider: str, external_order_id: str, reason: str = "sweep") -> bool:
        """Queue a poll of one order unless one is already queued or running.

        A poll whose retry is waiting (scheduled up to a minute out after a provider
        failure) runs now instead: whoever asks (the sweep, which follows the provider's
        poll backoff; a callback; an operator) wants the latest state now, and a waiting
        retry must not hold the order back for its full interval."""
        return self._enqueue_unique(
            self.polls,
            POLL_JOB,
            (provider, external_order_id, reason),
            poll_job_id(provider, external_order_id),
            retry=POLL_RETRY,
            description=f"poll {provider} order ({reason})",
            promote_scheduled=True,
        )

    def enqueue_poll_batch(self, provider: str, external_order_ids: list[str], reason: str = "sweep") -> bool:
        """Queue one job polling several orders of one provider (``workers.polls``), unless
        the same batch is already queued or running. The sweep's polls travel this way; an
        order's poll lock, not the job id, keeps two polls of one order apart."""
        return self._enqueue_unique(
            self.polls,
            POLL_BATCH_JOB,
            (provider, list(external_order_ids), reason),
            poll_batch_job_id(provider, external_order_ids),
            retry=POLL_RETRY,
            description=f"poll {len(external_order_ids)} {provider} orders ({reason})",
        )

    def queued_polls(self, limit: int) -> int:
        """The orders waiting in the polls queue (queued, not yet started), counted up to
        ``limit`` (one Redis read of at most ``limit`` job ids)."""
        total = 0
        for job_id in self.polls.get_job_ids(0, max(limit, 1)):
            total += orders_in(job_id)
            if total >= limit:
                break
        return min(total, limit)

    def enqueue_sweep(self) -> bool:
        return self._enqueue_unique(self.control, SWEEP_JOB, (), SWEEP_JOB_ID, description="sweep due orders")

    def enqueue_trigger_poll(self, provider: str, external_order_id: str, window: int) -> str:
        """A callback that only triggers a poll (its signature does not cover the status).

        At most one such poll per order per ``window`` seconds, and none is lost: the
        first runs at once; one asked for inside the window is scheduled for the
        window's end (a single scheduled job per order absorbs every replay), and
        it reads the provider's latest state when it runs."""
        gate = f"rampwatch:trigger:{provider}:{short_hash(external_order_id)}"
        if self.redis.set(gate, 1, nx=True, ex=window):
            queued = self.enqueue_poll(provider, external_order_id, reason="callback")
            return "queued" if queued else "already queued"
        ttl = self.redis.ttl(gate)
        delay = timedelta(seconds=max(int(ttl), 1))
        job_id = f"trigger-{provider}-{short_hash(provider, external_order_id)}"
        scheduled = self._schedule_unique(
            delay,
            (provider, external_order_id, "callback (deferred)"),
            job_id,
            description=f"deferred poll of {provider} order after a callback",
        )
        return "scheduled" if scheduled else "already scheduled"

    def poll_lock(self, provider: str, external_order_id: str) -> Lock:
        """The lock a poll of one order holds while it fetches and applies (at most one
        poll per order at a time). It expires with the job's timeout; one left by a
        dead worker is broken sooner (``take_poll_lock``)."""
        name = f"rampwatch:poll-lock:{provider}:{short_hash(provider, external_order_id)}"
        return self.redis.lock(name, timeout=JOB_TIMEOUT, blocking=False)

    def take_poll_lock(self, lock: Lock, worker_name: str | None) -> bool:
        """Acquire ``lock`` for a poll run by ``worker_name`` (None outside a worker). A lock
        held by a worker that died is broken and taken: a killed poll must not block its
        order's polls until the lock expires."""
        if lock.acquire(blocking=False, token=lock_token(worker_name)):
            return True
        return break_if_dead(self.redis, str(lock.name)) and bool(
            lock.acquire(blocking=False, token=lock_token(worker_name))
        )

    @staticmethod
    def release(lock: Lock) -> None:
        try:
            lock.release()
        except LockError:
            # It expired (a poll longer than the job timeout) and may be another's now;
            # the store orders answers by fetch time, so nothing is undone.
            log.warning("a poll outlived its lock %s", lock.name)

    def enqueue_deferred_poll(self, provider: str, external_order_id: str, reason: str) -> str:
        """A poll asked for while another poll of the order runs: one scheduled poll per
        order absorbs every such request, and it reads the latest state when it runs."""
        job_id = f"deferred-poll-{provider}-{short_hash(provider, external_order_id)}"
        scheduled = self._schedule_unique(
            timedelta(seconds=POLL_DEFER),
            (provider, external_order_id, f"{reason} (deferred)"),
            job_id,
            description=f"deferred poll of {provider} order ({reason})",
        )
        return "scheduled" if scheduled else "already scheduled"

    def enqueue_delivery(self, order_id: int) -> bool:
        """Deliver the order's pending notifications (``workers.notify``): one job per order,
        ``notify-<order id>``, so that any number of requests collapse into one run. One
        asked for while that job runs (which may have looked already) is scheduled
        ``DELIVER_AGAIN`` later as one more job per order. True when queued or scheduled."""
        job_id = f"notify-{order_id}"
        options: dict[str, Any] = {"retry": DELIVER_RETRY, "description": "deliver an order's notifications"}
        if self._enqueue_unique(self.notifications, DELIVER_JOB, (order_id,), job_id, **options):
            return True
        try:
            running = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
            if running.get_status(refresh=True) != JobStatus.STARTED:
                return False  # queued or scheduled: it has not looked yet
        except NoSuchJobError:
            pass  # it has just ended: the one scheduled below reads what it left
        return self.schedule_delivery(order_id, DELIVER_AGAIN, f"notify-again-{order_id}")

    def enqueue_deliveries(self, order_ids: list[int]) -> bool:
        """Deliver the pending notifications of the orders a batch of changes touched
        (``workers.jobs.deliver_notifications_of``): one job for the batch, not one per
        order, each batch its own job. Beside the orders' own jobs it is safe: a
        notification is claimed (leased) before it is sent, one order's in version order.
        True when queued."""
        ids = sorted(set(order_ids))
        if not ids:
            return False
        if len(ids) == 1:
            return self.enqueue_delivery(ids[0])
        self.notifications.enqueue_call(
            DELIVER_MANY_JOB,
            args=(ids,),
            retry=DELIVER_RETRY,
            description=f"deliver the notifications of {len(ids)} orders",
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            timeout=JOB_TIMEOUT,
        )
        return True

    def schedule_delivery(self, order_id: int, delay: float, job_id: str) -> bool:
        """A delivery of the order's notifications in ``delay`` seconds (a retry's time),
        unless a live job ``job_id`` exists. True when scheduled."""
        return self._schedule_unique(
            timedelta(seconds=max(delay, 0.0)),
            (order_id,),
            job_id,
            queue=self.notifications,
            func=DELIVER_JOB,
            retry=DELIVER_RETRY,
            description="deliver an order's notifications (scheduled)",
        )

    def _schedule_unique(
        self,
        delay: timedelta,
        args: tuple[Any, ...],
        job_id: str,
        *,
        queue: Queue | None = None,
        func: str = POLL_JOB,
        retry: Retry = POLL_RETRY,
        **options: Any,
    ) -> bool:
        """Schedule ``func`` (a poll unless told) on ``queue`` (``polls``) in ``delay``
        unless a live job with ``job_id`` exists (a finished or failed one is
        replaced). True when scheduled."""
        queue = queue or self.polls
        for _ in range(3):
            try:
                queue.enqueue_in(
                    delay,
                    func,
                    *args,
                    job_id=job_id,
                    unique=True,
                    result_ttl=RESULT_TTL,
                    failure_ttl=FAILURE_TTL,
                    retry=retry,
                    **options,
                )
                return True
            except DuplicateJobError:
                pass
            try:
                existing = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
                status = existing.get_status(refresh=True)
            except NoSuchJobError:
                continue
            if status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                existing.delete()
                continue
            return False  # scheduled, queued or running: it will read the latest state
        return False

    def enqueue_heal(self, provider: str, external_order_id: str) -> bool:
        """After a callback failed verification: poll the order if we know it and it is open.

        Rate-limited per order and overall, so a flood of forged callbacks costs a
        bounded number of lookups; the provider calls they lead to are budgeted
        apart (``take_heal_budget``), by the job, for open orders only, so that
        forgeries naming finished orders cannot use up the healing of open ones.
        """
        per_order = f"rampwatch:heal:{provider}:{short_hash(external_order_id)}"
        if not self.redis.set(per_order, 1, nx=True, ex=HEAL_WINDOW):
            return False
        if not self._within("rampwatch:heal:queued", HEAL_QUEUED_PER_WINDOW):
            return False
        return self._enqueue_unique(
            self.polls,
            HEAL_JOB,
            (provider, external_order_id),
            f"heal-{provider}-{short_hash(provider, external_order_id)}",
            description=f"healing poll of {provider} order after a failed verification",
        )

    def take_heal_budget(self) -> bool:
        """One provider call for a healing poll, if the window's budget allows it."""
        return self._within("rampwatch:heal:polls", HEAL_POLLS_PER_WINDOW)

    def _within(self, key: str, limit: int) -> bool:
        """Count one more in ``key``'s window; True while at most ``limit``."""
        with self.redis.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, HEAL_WINDOW, nx=True)
            count, _ = pipe.execute()
        return int(count) <= limit

    def _enqueue_unique(
        self,
        queue: Queue,
        func: str,
        args: tuple[Any, ...],
        job_id: str,
        *,
        promote_scheduled: bool = False,
        **options: Any,
    ) -> bool:
        """Enqueue unless a live job with ``job_id`` exists. True when (re)queued; with
        ``promote_scheduled``, a scheduled one (a retry waiting) is queued now."""
        options.setdefault("result_ttl", RESULT_TTL)
        options.setdefault("failure_ttl", FAILURE_TTL)
        options.setdefault("timeout", JOB_TIMEOUT)
        for _ in range(3):
            try:
                queue.enqueue_call(func, args=args, job_id=job_id, unique=True, **options)
                return True
            except DuplicateJobError:
                pass
            try:
                job = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
                status = job.get_status(refresh=True)
            except NoSuchJobError:
                continue  # it expired between the two calls: try again
            if status == JobStatus.STARTED and reclaim(queue, job_id):
                # Its worker died: the job has just been retried (or failed) as RQ would
                # after its maintenance pass; asked for again, it runs now.
                job = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
                status = job.get_status(refresh=True)
                if status == JobStatus.SCHEDULED:
                    queue.scheduled_job_registry.requeue(job)
                    log.info("requeued job %s: its worker died", job_id)
                    return True
            if status == JobStatus.SCHEDULED and promote_scheduled:
                try:
                    queue.scheduled_job_registry.requeue(job)
                except InvalidJobOperation:
                    return False  # the scheduler queued it meanwhile
                log.info("queued job %s now instead of at its retry", job_id)
                return True
            if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                job.requeue()
                log.info("requeued job %s after %s", job_id, status.value)
                return True
            if status == JobStatus.FINISHED:
                job.delete()
                continue
            return False  # queued, scheduled, deferred or live started: already accepted
        return False


def _describe(event: Event) -> str:
    return f"apply {event.source} {event.provider} {event.provider_status}"
