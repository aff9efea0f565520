"""The scheduler of delayed jobs (retries, deferred and triggered polls), run by every worker.

RQ's worker starts its scheduler only if it wins the scheduler lock at start-up, as a
forked process, and otherwise tries again only in its maintenance pass (every ten
minutes). A scheduler killed with its worker leaves its lock for a minute, so a worker
restarted after a crash ran no scheduler and scheduled jobs sat minutes late; and a
forked scheduler outlived a worker that was SIGKILLed alone, as an orphan. Here:

* the scheduler is a thread of its worker (``ThreadScheduler``): it dies with the
  worker and needs no fork from a threaded process;
* the worker checks every few seconds that a live scheduler holds the locks
  (``ensure_running``): a lock whose holder's heartbeat (RQ's ``rq:scheduler:<name>``
  record, beaten every second) is older than ``SCHEDULER_STALE`` is broken and taken,
  so that after a crash delayed jobs are late by seconds, not minutes.
"""

from __future__ import annotations

import logging
import threading

from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler
from rq.utils import now, utcparse

log = logging.getLogger("rampwatch.scheduler")

SCHEDULER_STALE = 10.0  # seconds without a heartbeat after which a scheduler counts as dead

_DELETE_IF_EQUAL = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


class ThreadScheduler(RQScheduler):
    """RQ's scheduler, run on a thread of its worker (see the module docstring)."""

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._start_lock = threading.Lock()
        self._wake = threading.Event()

    def request_stop(self, signum: object = None, frame: object = None) -> None:
        super().request_stop(signum, frame)
        self._wake.set()

    def work(self) -> None:
        """RQ's scheduler loop, waiting on an event instead of sleeping, so a stop is prompt."""
        self.register_birth()
        while not self._stop_requested:
            if self.should_reacquire_locks:
                self.acquire_locks()
            self.heartbeat()
            self.enqueue_scheduled_jobs()
            self._wake.wait(self.interval)
        self.stop()

    def start(self) -> threading.Thread:  # type: ignore[override]
        with self._start_lock:
            if self._process is not None and self._process.is_alive():
                return self._process
            self._status = self.Status.STARTED
            self._stop_requested = False
            self._wake.clear()
            thread = threading.Thread(target=self._run, name="rq-scheduler", daemon=True)
            self._process = thread  # type: ignore[assignment]
            thread.start()
            return thread

    def _run(self) -> None:
        log.info("scheduler %s: scheduling %s", self.name, ", ".join(sorted(self.acquired_locks)))
        try:
            self.work()
        except Exception as exc:  # its worker starts it again (``ensure_running``)
            log.warning("scheduler %s stopped: %s", self.name, type(exc).__name__)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def shutdown(self, timeout: float = 5.0) -> None:
        self.request_stop()
        if self._process is not None:
            self._process.join(timeout)

    def ensure_running(self, *, may_break: bool = True) -> None:
        """Start scheduling if no live scheduler holds the locks; with ``may_break``, first
        break the locks of schedulers whose heartbeat stopped."""
        if self.running and self.acquired_locks == self._queue_names:
            return
        if may_break and self.break_stale_locks() and self.running:
            self.lock_acquisition_time = None  # the running thread takes the freed locks on its next pass
            return
        if not self.running:
            self.acquire_locks(auto_start=True)

    def break_stale_locks(self) -> bool:
        """Delete the locks held by schedulers whose heartbeat stopped. True if any was."""
        broken = False
        for queue_name in sorted(self._queue_names - self.acquired_locks):
            key = self.get_locking_key(queue_name)
            holder = _text(self.connection.get(key))
            if not holder or holder == self.name:
                continue
            beat = _text(self.connection.hget(SCHEDULER_KEY_TEMPLATE % holder, "last_heartbeat"))
            if beat and (now() - utcparse(beat)).total_seconds() < SCHEDULER_STALE:
                continue
            if self.connection.eval(_DELETE_IF_EQUAL, 1, key, holder):
                log.warning(
                    "scheduler lock for %s taken from %s, whose heartbeat stopped", queue_name, holder
                )
                broken = True
        return broken
