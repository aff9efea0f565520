"""The ``clock`` process: enqueues the sweep every ``RAMPWATCH_SWEEP_INTERVAL`` seconds.

Exactly one clock may run. Each clock takes a Redis lock before it ticks and
renews it every tick; a second clock waits on standby (it says so once, and again
when it takes over), and takes over if the first dies and its lock expires. The sweep job itself has a fixed id, so even two clocks could
not queue two sweeps at once. Its Redis client (``rampwatch clock``) waits out an
outage (``workers.outages``) and gives up only when ``stop`` is set, so a Redis
outage of any length delays ticks and never ends the process.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from redis import Redis
from redis.exceptions import LockError, RedisError

from workers.queue import Queues

log = logging.getLogger("rampwatch.clock")

LOCK_NAME = "rampwatch:clock:leader"


class Clock:
    def __init__(self, redis: Redis, queues: Queues, interval: float, stop: threading.Event | None = None):
        self.redis = redis
        self.queues = queues
        self.interval = interval
        self.stop = stop or threading.Event()
        self.lock = redis.lock(LOCK_NAME, timeout=max(3 * interval, 10), thread_local=False)
        self.ticks = 0

    def run(self, on_tick: Callable[[bool], None] | None = None) -> None:
        """Tick until ``stop`` is set. Holds the leader lock while ticking."""
        leader = False
        standby = False  # said that another clock leads; said again only after a change
        try:
            while not self.stop.is_set():
                try:
                    if not leader:
                        leader = self.lock.acquire(blocking=False)
                        if leader and standby:
                            log.info(
                                "clock: took over as leader, enqueueing a sweep every %.1fs", self.interval
                            )
                        elif leader:
                            log.info("clock: leader, enqueueing a sweep every %.1fs", self.interval)
                        elif not standby:
                            log.info(
                                "clock: on standby: another clock holds %s; taking over if it stops",
                                LOCK_NAME,
                            )
                        standby = not leader
                    else:
                        self.lock.reacquire()
                    if leader:
                        queued = self.queues.enqueue_sweep()
                        self.ticks += 1
                        if on_tick:
                            on_tick(queued)
                except LockError:
                    log.warning("clock: lost the leader lock; waiting to take it back")
                    leader = False
                except RedisError as exc:
                    log.warning("clock: redis unavailable (%s); retrying", type(exc).__name__)
                    leader = False
                self.stop.wait(self.interval)
        finally:
            if leader:
                try:
                    self.lock.release()
                except (LockError, RedisError):
                    pass

    def install_signal_handlers(self) -> None:
        def _stop(signum: int, _frame: object) -> None:
            log.info("clock: signal %d, stopping", signum)
            self.stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
