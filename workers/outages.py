"""How a worker and the clock wait out an outage of Redis or of the database, instead of exiting.

Redis: the receiver's client gives up in well under a second (``workers.queue.connect``)
so that a webhook answers 503 and the provider sends it again. A worker or the clock
has nobody to hand a failure to, and RQ quits its work loop on any Redis error in its
own bookkeeping (heartbeats, registries, a finished job's result: "found an unhandled
exception, quitting..."). So their client (``connect_patient``) retries a lost
connection or a timeout for as long as the outage lasts, with capped backoff, logging
one line when Redis goes away and one when it is back. A stop request (SIGTERM, Ctrl-C)
ends the waiting: the call then raises, so that a process asked to stop during an
outage can exit. A certificate that does not verify is never retried.

The database: a job that fails because the database is unreachable or locked
(``database_unavailable``) keeps its retry (an outage is not the job's fault), and the
worker stops taking jobs until the database answers again (``DatabaseWatch``), so
that an outage of any length neither burns every job's retries nor spins the worker.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis import Redis
from redis.backoff import AbstractBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from workers.queue import connect, tls_verify_failure

log = logging.getLogger("rampwatch.outage")

T = TypeVar("T")

REDIS_BACKOFF_CAP = 2.0  # seconds between two attempts at most: back within ~2 s of Redis
DATABASE_BACKOFF_CAP = 15.0  # seconds between two pings of a database that is down


class Patience:
    """What every connection of a patient client shares: the stop switch and the outage's log.

    ``stop`` is set by whoever asks the process to stop; from then on a failing call
    raises instead of waiting. ``up_for()`` says how long Redis has answered since the
    last outage ended, so that decisions read from expiring keys (is a worker alive?)
    wait until every live process has had time to write its keys again."""

    def __init__(self, name: str, stop: threading.Event | None = None):
        self.name = name
        self.stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._up_since = time.monotonic() - 3600.0  # no outage seen yet

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def down(self, error: BaseException) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        log.warning("%s: redis unavailable (%s); waiting for it", self.name, type(error).__name__)

    def up(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            lasted = time.monotonic() - self._down_since
            self._down_since = None
            self._up_since = time.monotonic()
        log.warning("%s: redis is back after %.1fs", self.name, lasted)

    def up_for(self) -> float:
        """Seconds since Redis last came back (0 while it is down)."""
        with self._lock:
            return 0.0 if self._down_since is not None else time.monotonic() - self._up_since


class _CappedJitter(AbstractBackoff):
    """0.1 s doubling up to ``cap``, with jitter so that many workers do not retry in step."""

    def __init__(self, cap: float):
        self.cap = cap

    def compute(self, failures: int) -> float:
        return random.uniform(0.5, 1.0) * min(self.cap, 0.1 * 2 ** min(failures, 16))


class PatientRetry(Retry):
    """redis-py's retry policy, waiting for as long as the outage lasts (see the module docstring)."""

    def __init__(self, patience: Patience, cap: float = REDIS_BACKOFF_CAP):
        super().__init__(_CappedJitter(cap), -1, (RedisConnectionError, RedisTimeoutError, socket.timeout))
        self.patience = patience

    def __deepcopy__(self, memo: dict[int, Any]) -> PatientRetry:
        # redis-py copies the policy into every connection; the stop switch must stay shared.
        return self

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        failures = 0
        while True:
            try:
                result = do()
            except self._supported_errors as error:
                if (is_retryable and not is_retryable(error)) or tls_verify_failure(error) is not None:
                    raise
                failures += 1
                if with_failure_count:
                    fail(error, failures)
                else:
                    fail(error)
                if self.patience.stopping:
                    raise
                self.patience.down(error)
                # A stop ends the wait early; the loop then tries once more before giving up.
                self.patience.stop.wait(self._backoff.compute(failures))
                continue
            if failures:
                self.patience.up()
            return result


def connect_patient(url: str, patience: Patience, *, timeout: float, tls_verify: str = "required") -> Redis:
    """A client like the receiver's (``workers.queue.connect``) that waits out outages."""
    return connect(url, timeout=timeout, tls_verify=tls_verify, retry=PatientRetry(patience))


def patience_of(redis: Redis) -> Patience | None:
    """The ``Patience`` of a client made by ``connect_patient`` (None for any other client)."""
    retry = redis.connection_pool.connection_kwargs.get("retry")
    return retry.patience if isinstance(retry, PatientRetry) else None


# SQLite reports a missing table or a syntax error as an OperationalError too: those are bugs
# or a missing migration, not an outage, and waiting would not fix them.
_SQLITE_NOT_OUTAGES = ("no such ", "syntax error", "near ", "has no column")


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached or is locked (an outage), rather
    than that a statement or the data is wrong."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    message = str(exc.orig).lower()
    return not any(marker in message for marker in _SQLITE_NOT_OUTAGES)


class DatabaseWatch:
    """A worker's view of its database: jobs report an outage (``note_down``), and the
    worker waits for the database (``wait_until_up``) before it takes the next job."""

    def __init__(self) -> None:
        self._down = threading.Event()

    @property
    def is_down(self) -> bool:
        return self._down.is_set()

    def note_down(self) -> None:
        self._down.set()

    def wait_until_up(
        self,
        engine: Engine,
        stopping: Callable[[], bool],
        keep_alive: Callable[[], None] = lambda: None,
        cap: float = DATABASE_BACKOFF_CAP,
    ) -> bool:
        """Ping ``engine`` with backoff until it answers (True) or ``stopping()`` (False)."""
        started = time.monotonic()
        delay = 0.5
        log.warning("database unavailable; waiting for it before the next job")
        while not stopping():
            keep_alive()
            try:
                # On SQLite this opens a write transaction (BEGIN IMMEDIATE): it answers only
                # once an outside lock is gone, which is what the next job needs.
                with engine.begin() as conn:
                    conn.exec_driver_sql("SELECT 1")
            except SQLAlchemyError as exc:
                if not database_unavailable(exc):
                    break  # it answers; the job's own error is for its retries to handle
                time.sleep(delay)
                delay = min(delay * 2, cap)
                continue
            break
        else:
            return False
        self._down.clear()
        log.warning("database is back after %.1fs", time.monotonic() - started)
        return True
