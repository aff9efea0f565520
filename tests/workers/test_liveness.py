"""Dead workers' jobs and locks (``workers.liveness``), on the suite's private Redis.

A job is made STARTED the way RQ's worker makes it (``prepare_for_execution`` and an
``Execution`` in the started registry) by a worker that is alive or not; the fault
tests (tests/faults/test_crashes.py) show the same with SIGKILLed worker processes.
"""

from __future__ import annotations

from redis import Redis
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from workers import liveness
from workers.queue import APPLY_RETRY, Queues


def _started_by(queues: Queues, job_id: str, worker: str, retry: bool = True) -> Job:
    job = queues.events.enqueue_call(
        "workers.jobs.apply_event", args=({},), job_id=job_id, retry=APPLY_RETRY if retry else None
    )
    queues.events.remove(job)
    with queues.redis.pipeline() as pipe:
        job.prepare_for_execution(worker, pipe)
        Execution.create(job, 180, pipe, worker_name=worker)
        pipe.execute()
    return job


def _status(redis: Redis, job_id: str) -> JobStatus:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer).get_status(refresh=True)


def test_only_a_dead_workers_job_is_reclaimed_and_only_once(redis: Redis) -> None:
    queues = Queues(redis)
    liveness.beat(redis, "alive-w")
    _started_by(queues, "by-the-living", "alive-w")
    _started_by(queues, "by-the-dead", "dead-w")
    _started_by(queues, "no-retries", "dead-w", retry=False)
    assert liveness.is_alive(redis, "alive-w") and not liveness.is_alive(redis, "dead-w")

    assert sorted(liveness.reclaim(queues.events)) == ["by-the-dead", "no-retries"]
    assert _status(redis, "by-the-living") == JobStatus.STARTED
    # Retried as RQ retries an abandoned job: its first retry interval, one retry spent.
    assert _status(redis, "by-the-dead") == JobStatus.SCHEDULED
    assert Job.fetch("by-the-dead", connection=redis, serializer=JSONSerializer).retries_left == 4
    assert _status(redis, "no-retries") == JobStatus.FAILED
    assert liveness.reclaim(queues.events) == []  # claimed once, whoever asks again
    members = [m.decode() for m in redis.zrange(queues.events.started_job_registry.key, 0, -1)]
    assert [m.split(":")[0] for m in members] == ["by-the-living"]

    liveness.forget(redis, "alive-w")
    assert liveness.reclaim(queues.events, job_id="by-the-living") == ["by-the-living"]


def test_a_lock_is_broken_only_when_the_worker_it_names_is_dead(redis: Redis) -> None:
    queues = Queues(redis)
    liveness.beat(redis, "alive-w")
    held = queues.poll_lock("alixpay", "o-1")
    assert queues.take_poll_lock(held, "alive-w")
    assert not queues.take_poll_lock(queues.poll_lock("alixpay", "o-1"), "other-w")

    liveness.forget(redis, "alive-w")  # its holder died
    taker = queues.poll_lock("alixpay", "o-1")
    assert queues.take_poll_lock(taker, "other-w")
    assert redis.get(taker.name).decode().startswith("other-w|")

    # A lock taken outside a worker (the CLI) names none: it is left to expire.
    cli = queues.poll_lock("alixpay", "o-2")
    assert queues.take_poll_lock(cli, None)
    assert not queues.take_poll_lock(queues.poll_lock("alixpay", "o-2"), "other-w")
