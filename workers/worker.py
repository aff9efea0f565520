"""The ``worker`` process: a non-forking RQ worker on the control, events, polls and notifications
queues, and a consumer of the callback stream (``workers.drain``) in a thread beside it.

``SimpleWorker`` runs each job in the worker process itself (no fork per job), so
its Services (engine pool, HTTP session, adapters) is built once and reused. On
SIGTERM, RQ's warm shutdown lets the job in hand finish before the process exits;
a second signal forces it.

What ``RampwatchWorker`` adds to RQ's worker, so that a worker outlives its
dependencies and no job stays blocked after a crash:

* its Redis client waits out an outage (``workers.outages``), and a database outage
  makes it wait for the database before the next job instead of burning retries;
* a companion thread (``Custodian``) says every ``BEAT`` seconds that the worker is
  alive, hands the jobs of dead workers back to RQ (``workers.liveness``) and keeps a
  scheduler of delayed jobs running (``workers.scheduler``, a thread of the worker);
* a ``Drainer`` thread applies the callback stream in batches; a stop request lets it
  finish and acknowledge the batch in hand before the process exits (a burst worker
  drains the stream first, in its own thread, then works the queues);
* if RQ's work loop ends for any reason but a stop request ("found an unhandled
  exception, quitting..."), ``run_worker`` starts it again after a pause, so the
  process never exits on its own.

RQ's own loggers speak at WARNING and up only, whatever level RQ is asked for
(``config.logs.quiet_level``): at INFO RQ writes three or four lines per job, and the
clock queues a sweep every few seconds. ``run_worker`` flushes the process's counts
to Redis in the background and once more when the worker stops (``config.metrics``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.serializers import JSONSerializer

from config.logs import quiet_level
from workers import liveness
from workers.drain import Drainer
from workers.outages import patience_of
from workers.queue import QUEUE_NAMES
from workers.scheduler import ThreadScheduler
from workers.services import Services

log = logging.getLogger("rampwatch.worker")

# RQ blocks on a dequeue for WORKER_TTL - 15 s and runs its maintenance (registry
# cleaning) between two dequeues at most every MAINTENANCE_INTERVAL: half a minute
# instead of RQ's ten, for expired entries the custodian did not reclaim first.
WORKER_TTL = 45
MAINTENANCE_INTERVAL = 30
DRAIN_STOP_WAIT = 25.0  # seconds a stop waits for the batch in hand (Heroku kills 30 s after SIGTERM)
RESTART_BACKOFF_CAP = 30.0  # seconds between two restarts of a work loop that keeps failing


class Custodian(threading.Thread):
    """The worker's companion: its presence, dead workers' jobs, and the scheduler."""

    def __init__(self, worker: RampwatchWorker):
        super().__init__(name=f"custodian-{worker.name}", daemon=True)
        self.worker = worker
        self._stop_event = threading.Event()

    def start(self) -> None:
        liveness.beat(self.worker.connection, self.worker.name)  # alive before the first job
        super().start()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)

    def run(self) -> None:
        while not self._stop_event.wait(liveness.BEAT):
            self.tick()

    def tick(self) -> None:
        worker = self.worker
        patience = worker.patience
        try:
            liveness.beat(worker.connection, worker.name)
            # Right after an outage, a live worker may not have renewed its key yet: judge
            # other workers only once every live one has had time to beat again.
            settled = patience is None or patience.up_for() >= liveness.ALIVE_TTL
            if settled:
                for queue in worker.queues:
                    liveness.reclaim(queue)
            # A stopping worker has stopped its scheduler on purpose: another one takes over.
            if isinstance(worker.scheduler, ThreadScheduler) and not worker.stopping:
                worker.scheduler.ensure_running(may_break=settled)
        except RedisError as exc:
            if not (patience and patience.stopping):
                log.warning("worker %s: custodian pass failed (%s)", worker.name, type(exc).__name__)
        except Exception:
            log.exception("worker %s: custodian pass failed", worker.name)


class RampwatchWorker(SimpleWorker):
    """RQ's ``SimpleWorker`` that outlives outages and crashes (see the module docstring)."""

    def __init__(self, runtime: Services, name: str | None = None):
        super().__init__(
            runtime.queues.all(),
            connection=runtime.redis,
            serializer=JSONSerializer,
            name=name,
            worker_ttl=WORKER_TTL,
            maintenance_interval=MAINTENANCE_INTERVAL,
        )
        self.runtime = runtime
        self.patience = patience_of(runtime.redis)
        self.custodian: Custodian | None = None
        self.drainer = Drainer(runtime, self.name)
        self._drain_thread: threading.Thread | None = None
        self._bursting = False

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for (a signal), as opposed to the loop ending by accident."""
        return self._stop_requested or self._shutdown_requested_date is not None

    def work(self, *args: Any, **kwargs: Any) -> bool:
        # RQ sets its loggers to the level it is given here: never below WARNING.
        kwargs["logging_level"] = logging.getLevelName(quiet_level(kwargs.get("logging_level") or "INFO"))
        self._bursting = bool(kwargs.get("burst") or (args and args[0]))
        drained = self.drainer.drain() if self._bursting else 0
        return super().work(*args, **kwargs) or drained > 0

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        # RQ's own start and stop lines are below WARNING now: one line each of ours.
        log.info("worker %s: started, listening on %s", self.name, ", ".join(q.name for q in self.queues))
        self.custodian = Custodian(self)
        self.custodian.start()
        if not self._bursting:
            self._drain_thread = threading.Thread(
                target=self.drainer.run, name=f"drainer-{self.name}", daemon=True
            )
            self._drain_thread.start()

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = "%H:%M:%S",
        log_format: str = "%(asctime)s %(message)s",
    ) -> None:
        if burst:  # one pass over due jobs, as RQ does
            super()._start_scheduler(burst, logging_level, date_format, log_format)
            return
        self.scheduler = ThreadScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging.getLevelName(quiet_level(logging_level or "INFO")),
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
            name=self.name,
        )
        self.scheduler.ensure_running()

    def stop_scheduler(self) -> None:
        if isinstance(self.scheduler, ThreadScheduler):
            self.scheduler.shutdown()
        else:
            super().stop_scheduler()

    def request_stop(self, signum: int, frame: Any) -> None:
        self.drainer.stop()  # it finishes and acknowledges the batch in hand
        if self.patience is not None:
            self.patience.stop.set()  # from now on, Redis calls fail instead of waiting
        super().request_stop(signum, frame)

    def set_shutdown_requested_date(self) -> None:
        try:
            super().set_shutdown_requested_date()
        except RedisError:
            pass  # bookkeeping only: the stop goes ahead without it

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        watch = self.runtime.database_watch
        if watch.is_down:
            watch.wait_until_up(
                self.runtime.store.engine, stopping=lambda: self.stopping, keep_alive=self.heartbeat
            )
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def teardown(self) -> None:
        try:
            super().teardown()
        except RedisError as exc:
            log.warning("worker %s: could not record its stop in redis (%s)", self.name, type(exc).__name__)
            try:
                self.unsubscribe()
            except RedisError:
                pass
        finally:
            self._stop_draining()
            log.info("worker %s: stopped", self.name)
            if self.custodian is not None:
                self.custodian.stop()
                try:
                    liveness.forget(self.connection, self.name)
                except RedisError:
                    pass  # it expires in ALIVE_TTL

    def _stop_draining(self) -> None:
        self.drainer.stop()
        thread = self._drain_thread
        if thread is not None and thread.is_alive() and threading.current_thread() is not thread:
            thread.join(timeout=DRAIN_STOP_WAIT)
            if thread.is_alive():
                log.warning("worker %s: the drainer's batch outlived the stop", self.name)


def make_worker(runtime: Services, name: str | None = None) -> RampwatchWorker:
    worker = RampwatchWorker(runtime, name)
    assert [q.name for q in worker.queues] == list(QUEUE_NAMES)
    return worker


def run_worker(runtime: Services, *, burst: bool = False, name: str | None = None) -> bool:
    """Work until asked to stop (or, with ``burst``, until the queues are empty)."""
    runtime.install()
    runtime.metrics.start()
    delay = 1.0
    worked = False
    try:
        while True:
            worker = make_worker(runtime, name)
            worked = (
                worker.work(burst=burst, with_scheduler=True, logging_level=runtime.settings.log_level)
                or worked
            )
            if burst or worker.stopping:
                return worked
            log.error(
                "worker %s: its work loop ended unexpectedly; starting again in %.0fs", worker.name, delay
            )
            try:
                time.sleep(delay)
            except StopRequested:  # a SIGTERM during the pause reaches the last worker's handler
                return worked
            delay = min(delay * 2, RESTART_BACKOFF_CAP)
    finally:
        runtime.metrics.stop()
