"""The counters of rampwatch: counted in memory by each process, summed in Redis.

Counts are made in many processes: every gunicorn worker of the ``web`` dyno and
every ``worker`` dyno, which share no filesystem. Each process counts in memory
(``Metrics.inc``, thread-safe, never raises) and a background thread adds the
deltas to one Redis hash per counter every ``FLUSH_INTERVAL`` seconds (``HINCRBY``,
all in one pipeline), and once more when the process stops. ``/metrics``
(``receiver.metrics``) reads those hashes, so one scrape of any web process shows
the sum over every process that ever counted. A flush that fails (Redis down) puts
its deltas back: they go with the next one. Counting never fails a callback or a job.

Label values are short tokens (``[A-Za-z0-9_.:-]``, 64 characters at most); anything
else is counted as ``other``, so no id, body or personal value can become a label.
The counters are reset only when Redis loses the hashes; Prometheus reads a drop as
a counter reset, as it does for a restarted process.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
from collections.abc import Mapping

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger("rampwatch.metrics")

FLUSH_INTERVAL = 2.0  # seconds between two flushes of a process's counts
KEY_PREFIX = "rampwatch:metrics:"
SEPARATOR = "|"  # between the label values of a hash field (never in a label value)

# name (exposed with "_total") -> (help, label names)
COUNTERS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "rampwatch_callbacks": (
        "Provider callbacks answered by the receiver, by outcome (accepted, or the reason of a refusal)",
        ("provider", "outcome"),
    ),
    "rampwatch_verification_failures": (
        "Provider callbacks whose signature did not verify",
        ("provider",),
    ),
    "rampwatch_events": (
        "Events the writer recorded, by source and decision (applied, confirmed, duplicate, stale, ...)",
        ("provider", "source", "decision"),
    ),
    "rampwatch_transitions": (
        "Order status changes, by the status reached",
        ("provider", "to_status"),
    ),
    "rampwatch_anomalies": (
        "Anomalies raised, by kind",
        ("provider", "kind"),
    ),
    "rampwatch_polls": (
        "Polls of a provider's order API, by outcome (applied, unchanged, failed, deferred)",
        ("provider", "outcome"),
    ),
    "rampwatch_callbacks_dead_lettered": (
        "Callbacks moved to the dead-letter stream (bad data, or failing past their deliveries)",
        ("provider",),
    ),
    "rampwatch_notifications": (
        "Attempts to deliver a partner notification, by outcome (delivered, failed, dead)",
        ("outcome",),
    ),
}

_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def label(value: object) -> str:
    """A label value: the token itself, or ``other``."""
    text = str(value)
    return text if _TOKEN.fullmatch(text) else "other"


def key(name: str) -> str:
    return KEY_PREFIX + name


# This process's id, kept current by a fork hook: ``inc`` compares it at every count, and
# ``os.getpid()`` is a system call.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class Metrics:
    """One process's counts, flushed to ``redis`` (see the module docstring)."""

    def __init__(self, redis: Redis | None = None, interval: float = FLUSH_INTERVAL):
        self.redis = redis
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], int] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pid = _pid

    def inc(self, name: str, amount: int = 1, **labels: object) -> None:
        """Count ``amount`` for ``name`` with ``labels`` (every label of the counter). Never raises."""
        try:
            spec = COUNTERS.get(name)
            if spec is None or set(labels) != set(spec[1]):
                log.warning("metrics: %s with labels %s is not a declared counter", name, sorted(labels))
                return
            field = SEPARATOR.join(label(labels[n]) for n in spec[1])
            self._after_fork()
            with self._lock:
                self._pending[(name, field)] = self._pending.get((name, field), 0) + amount
        except Exception:  # counting must never fail the work it counts
            log.exception("metrics: could not count %s", name)

    def pending(self) -> dict[tuple[str, str], int]:
        """A copy of the counts not yet flushed: (counter, label values) -> count."""
        with self._lock:
            return dict(self._pending)

    def flush(self) -> bool:
        """Add the pending counts to Redis in one pipeline. False (counts kept) on failure."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return True
        if self.redis is None:
            self._put_back(batch)
            return False
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for (name, field), amount in batch.items():
                    pipe.hincrby(key(name), field, amount)
                pipe.execute()
            return True
        except (RedisError, OSError) as exc:
            self._put_back(batch)
            log.warning(
                "metrics: flush failed (%s); the counts are kept for the next one", type(exc).__name__
            )
            return False

    def _put_back(self, batch: dict[tuple[str, str], int]) -> None:
        with self._lock:
            for k, amount in batch.items():
                self._pending[k] = self._pending.get(k, 0) + amount

    def start(self) -> None:
        """Flush every ``interval`` seconds on a daemon thread, and at interpreter exit."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rampwatch-metrics", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the flushing thread and flush what is left (bounded by ``timeout``)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def _after_fork(self) -> None:
        """In a child forked after ``start`` (a preloading server): the parent's counts are
        the parent's to flush, and the thread did not survive the fork: start one."""
        if self._pid == _pid:
            return
        # The parent's lock may have been held by one of its threads at the fork: a new one.
        self._lock = threading.Lock()
        self._pid = _pid
        self._pending = {}
        was_running = self._thread is not None
        self._thread = None
        if was_running:
            self.start()
