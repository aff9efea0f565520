"""The faults the soak injects, each one a thing a host, a network or a provider does.

Worker crashes (SIGKILL of the whole process group, then a new worker, as a host
restarts a crashed dyno), a graceful worker restart (SIGTERM), a Redis restart with
AOF, a database stall (an outside transaction holding the write lock, or the orders
table on PostgreSQL), provider APIs answering 5xx, 429, garbage, redirects and
timeouts, a killed clock replaced by a new one while a second clock also runs.
``SCHEDULE`` says when each happens, as a fraction of the traffic's duration.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Engine

from devkit.fleet import Fleet, Member
from devkit.kit import SandboxKit
from devkit.localredis import PrivateRedis

log = logging.getLogger("rampwatch.soak")

PROVIDER_FAULT_SECONDS = 8.0
REDIS_DOWN_SECONDS = 5.0
STALL_SECONDS = 8.0


@dataclass
class Injector:
    fleet: Fleet
    commands: Mapping[str, str]  # Procfile lines
    redis: PrivateRedis
    engine: Engine
    sandboxes: Mapping[str, SandboxKit]
    workers: list[Member] = field(default_factory=list)
    clocks: list[Member] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    _count: int = 0

    def start_worker(self) -> Member:
        self._count += 1
        member = self.fleet.start(
            f"worker-{self._count}", ["/bin/sh", "-c", f"exec {self.commands['worker']}"]
        )
        self.workers.append(member)
        return member

    def start_clock(self) -> Member:
        member = self.fleet.start(
            f"clock-{len(self.clocks) + 1}", ["/bin/sh", "-c", f"exec {self.commands['clock']}"]
        )
        self.clocks.append(member)
        return member

    def _live_workers(self) -> list[Member]:
        return [w for w in self.workers if w.alive]

    def kill_worker(self) -> None:
        victim = self._live_workers()[0]
        victim.kill()
        time.sleep(2.0)  # the host notices and starts another
        self.start_worker()
        self.done.append(f"SIGKILL {victim.name} under load, a new worker 2 s later")

    def term_worker(self) -> None:
        victim = self._live_workers()[0]
        code = victim.terminate()
        self.start_worker()
        self.done.append(f"SIGTERM {victim.name} (exit {code}), a new worker")

    def restart_redis(self) -> None:
        self.redis.halt()
        time.sleep(REDIS_DOWN_SECONDS)
        self.redis.start()
        self.done.append(f"Redis stopped for {REDIS_DOWN_SECONDS:g} s and restarted from its AOF")

    def stall_database(self) -> None:
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")
                conn.exec_driver_sql("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            time.sleep(STALL_SECONDS)
            conn.exec_driver_sql("ROLLBACK")
        self.done.append(f"database stalled for {STALL_SECONDS:g} s (write lock held outside)")

    def _provider_faults(self, faults: Mapping[str, dict[str, object]], what: str) -> None:
        for provider, switches in faults.items():
            self.sandboxes[provider].set_switches(**switches)
        time.sleep(PROVIDER_FAULT_SECONDS)
        for provider, switches in faults.items():
            self.sandboxes[provider].set_switches(**{name: type(v)() for name, v in switches.items()})
        self.done.append(f"provider APIs for {PROVIDER_FAULT_SECONDS:g} s: {what}")

    def provider_errors(self) -> None:
        self._provider_faults(
            {
                "alixpay": {"detail_fail": True},
                "changelly": {"rate_limit": 20},
                "fuspay": {"detail_garbage": True},
            },
            "AliX 5xx, Changelly 429, Fuspay garbage",
        )

    def provider_detours(self) -> None:
        self._provider_faults(
            {
                "alixpay": {"detail_delay": 6.0},
                "fuspay": {"detail_redirect": True},
                "changelly": {"detail_throttle": True},
            },
            "AliX timeouts, Fuspay redirects, Changelly 429 from a proxy",
        )

    def replace_clock(self) -> None:
        victim = next(c for c in self.clocks if c.alive)
        victim.kill()
        self.start_clock()
        self.start_clock()  # and a second one: only one may lead
        self.done.append(f"SIGKILL {victim.name}; two new clocks, one leads")


SCHEDULE: list[tuple[float, Callable[[Injector], None]]] = [
    (0.12, Injector.kill_worker),
    (0.25, Injector.restart_redis),
    (0.38, Injector.stall_database),
    (0.50, Injector.provider_errors),
    (0.62, Injector.kill_worker),
    (0.70, Injector.replace_clock),
    (0.78, Injector.provider_detours),
    (0.90, Injector.term_worker),
]


def run_schedule(
    injector: Injector, started: float, duration: float, stop: threading.Event, finished: threading.Event
) -> None:
    """Inject every fault of ``SCHEDULE`` at its time, set ``finished``, then wait for ``stop``.

    Run it on a thread of its own that lives until ``stop``: the Redis it restarts dies
    with the thread that started it (``devkit.localredis``)."""
    try:
        for fraction, fault in SCHEDULE:
            if stop.wait(max(0.0, started + fraction * duration - time.monotonic())):
                return
            try:
                fault(injector)
            except Exception as exc:  # one failed injection must not end the others
                log.exception("soak: fault %s failed", fault.__name__)
                injector.done.append(f"{fault.__name__} FAILED: {type(exc).__name__}")
    finally:
        finished.set()
    stop.wait()
