"""The ``worker`` process: a non-forking RQ worker on the events, polls and control queues.

``SimpleWorker`` runs each job in the worker process itself (no fork per job), so
its Services (engine pool, HTTP session, adapters) is built once and reused. On
SIGTERM, RQ's warm shutdown lets the job in hand finish before the process exits;
a second signal forces it. Retries with intervals need RQ's scheduler, which the
worker runs (one active scheduler per queue set, elected through Redis).
"""

from __future__ import annotations

from rq import SimpleWorker
from rq.serializers import JSONSerializer

from workers.queue import QUEUE_NAMES
from workers.services import Services


def make_worker(runtime: Services, name: str | None = None) -> SimpleWorker:
    queues = runtime.queues.all()
    assert [q.name for q in queues] == list(QUEUE_NAMES)
    return SimpleWorker(queues, connection=runtime.redis, serializer=JSONSerializer, name=name)


def run_worker(runtime: Services, *, burst: bool = False, name: str | None = None) -> bool:
    runtime.install()
    worker = make_worker(runtime, name)
    return worker.work(burst=burst, with_scheduler=True, logging_level=runtime.settings.log_level)
