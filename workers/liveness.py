"""Which workers are alive, and what becomes of the work of one that is not.

RQ learns that a worker died only when the job's entry in the started registry
expires (for a ``SimpleWorker``, the job's timeout plus a minute) and acts on it only
in its maintenance pass (every ten minutes): a job left STARTED by a SIGKILLed worker
blocked its order or its callback for about ten minutes, and re-posting the identical
callback counted as "already accepted" and queued nothing.

So every worker process says it is alive: ``rampwatch:alive:<worker name>``, a key
with a TTL of ``ALIVE_TTL`` seconds renewed every ``BEAT`` seconds by a thread of the
worker (``workers.worker``), which dies with the process. A STARTED job whose worker
has no such key is abandoned; ``reclaim`` hands it to RQ's own abandoned-job handling
at once (retried on its schedule if it has retries left, else failed), exactly once
however many processes notice (each entry is claimed with one ``ZREM``). Work that
runs twice is safe: the store is idempotent; this module only makes it run again soon.

A lock taken by a job carries its worker's name (``lock_token``), so that a lock left
by a dead worker can be broken at once (``break_if_dead``) instead of blocking its
order until it expires.
"""

from __future__ import annotations

import logging
import uuid

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.utils import parse_composite_key

log = logging.getLogger("rampwatch.liveness")

ALIVE_TTL = 10  # seconds without a beat after which a worker counts as dead
BEAT = 2  # seconds between two beats

_ALIVE = "rampwatch:alive:"
_HOLDER_SEP = "|"

# Delete a key only if it still holds the value we read (the holder we judged dead).
_DELETE_IF_EQUAL = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def alive_key(worker_name: str) -> str:
    return _ALIVE + worker_name


def beat(redis: Redis, worker_name: str) -> None:
    redis.set(alive_key(worker_name), 1, ex=ALIVE_TTL)


def forget(redis: Redis, worker_name: str) -> None:
    redis.delete(alive_key(worker_name))


def is_alive(redis: Redis, worker_name: str) -> bool:
    return bool(redis.exists(alive_key(worker_name)))


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _worker_of(redis: Redis, job_id: str, execution_id: str) -> str:
    """The worker that runs this execution (the execution's record, else the job's)."""
    name = _text(redis.hget(Execution(execution_id, job_id, redis).key, "worker_name"))
    return name or _text(redis.hget(Job.key_for(job_id), "worker_name"))


def reclaim(queue: Queue, job_id: str | None = None) -> list[str]:
    """Hand the STARTED jobs of ``queue`` whose worker is dead (only ``job_id``'s, when
    given) to RQ's abandoned-job handling; the ids of the jobs reclaimed."""
    redis = queue.connection
    registry = queue.started_job_registry
    reclaimed = []
    for raw in redis.zrange(registry.key, 0, -1):
        composite = _text(raw)
        entry_job, execution_id = parse_composite_key(composite)
        if job_id is not None and entry_job != job_id:
            continue
        worker = _worker_of(redis, entry_job, execution_id)
        if not worker or is_alive(redis, worker):
            continue
        if not redis.zrem(registry.key, composite):
            continue  # another process claimed it first
        if _abandon(queue, Execution(execution_id, entry_job, redis, worker)):
            reclaimed.append(entry_job)
    return reclaimed


def _abandon(queue: Queue, execution: Execution) -> bool:
    """What ``StartedJobRegistry.cleanup`` does to an abandoned job, for one job now."""
    job_id, worker = execution.job_id, execution.worker_name
    try:
        job = Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer)
    except NoSuchJobError:
        return False
    if job.get_status(refresh=False) != JobStatus.STARTED:
        return False  # it ended while we looked
    with queue.connection.pipeline() as pipe:
        execution.delete(job, pipe)
        if job.retries_left and job.retries_left > 0:
            job.retry(queue, pipe)
            outcome = "retried"
        else:
            record_job_failure(job, f"abandoned: its worker {worker} died", pipe)
            outcome = "failed"
        pipe.execute()
    log.warning("job %s was left by dead worker %s: %s", job_id, worker, outcome)
    return True


def lock_token(worker_name: str | None) -> str:
    """A lock token naming its holder's worker (a bare token outside a worker)."""
    token = uuid.uuid4().hex
    return f"{worker_name}{_HOLDER_SEP}{token}" if worker_name else token


def break_if_dead(redis: Redis, name: str) -> bool:
    """Delete the lock ``name`` if the worker named in its token is dead. True when broken.

    A lock taken outside a worker (the CLI) names none and is left to expire."""
    token = _text(redis.get(name))
    worker, sep, _ = token.rpartition(_HOLDER_SEP)
    if not sep or not worker or is_alive(redis, worker):
        return False
    broken = bool(redis.eval(_DELETE_IF_EQUAL, 1, name, token))
    if broken:
        log.warning("broke lock %s left by dead worker %s", name, worker)
    return broken
