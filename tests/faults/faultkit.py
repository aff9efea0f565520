"""The fault tests' stack: real ``rampwatch worker`` and ``rampwatch clock`` processes.

``fault_stack`` gives a test what a host runs, on loopback: a private Redis the test
may stop and restart (AOF on, ``appendfsync everysec``, unless ``aof=False``), a
migrated SQLite database (or, with ``postgres=True``, a private PostgreSQL database
the test may cut off), the three sandboxes, the receiver on a loopback port with the
web tier's quick Redis client (it answers 503 while Redis is down), and a ``Fleet``
for the worker and clock processes (``devkit.fleet``), whose logs are printed at the
end (pytest shows them when a test fails). Each test module declares its own
``faults`` fixture over it (``yield from fault_stack(...)``): a second conftest.py
would shadow the suite's ``conftest`` module.

The fault runs that take minutes (60-second outages, provider faults, clocks) are in
``soak_faults.py``, a name ``make test`` does not collect; ``make soak`` runs it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from conftest import (
    E2E_TOKEN,
    POSTGRES_URL,
    Keys,
    _pg_url,
    alix_env,
    alix_settings,
    changelly_env,
    changelly_settings,
    fuspay_env,
    fuspay_settings,
    serve_receiver,
)
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from scenarios import alixpay_sell, changelly_sell, fuspay_sell
from sqlalchemy import create_engine, text

from config import Settings
from devkit.alixpay.sandbox import AlixSandbox
from devkit.changelly.sandbox import ChangellySandbox
from devkit.fleet import Fleet, Member, rampwatch_argv
from devkit.fuspay.sandbox import FuspaySandbox
from devkit.localredis import PrivateRedis
from orders.migrate import upgrade
from receiver import create_app
from workers.queue import connect
from workers.services import Services, build_services

ROOT = Path(__file__).resolve().parents[2]
E2E_OPS_TOKEN = "e2e-ops-token-0123456789abcdef"  # reconcile is the operator's


def wait_for(what: str, predicate: Callable[[], bool], timeout: float, every: float = 0.2) -> float:
    """Poll ``predicate`` until it holds; the seconds it took. AssertionError after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:g}s")


@dataclass
class Faults:
    redis_server: PrivateRedis
    redis: Redis  # the test's own client, quick
    runtime: Services  # the receiver's collaborators (quick Redis client)
    sandbox: AlixSandbox
    changelly: ChangellySandbox
    fuspay: FuspaySandbox
    database_url: str
    base: str
    env: dict[str, str]
    fleet: Fleet
    admin_url: str | None = None  # PostgreSQL: a connection to the server outside the test's database
    database_name: str | None = None

    def create(self, provider: str, order_id: str) -> None:
        """Create an order through the API, as the partner does."""
        request = {
            "alixpay": alixpay_sell,
            "fuspay": lambda oid: fuspay_sell(oid, partner_callback_url=f"{self.base}/webhooks/fuspay"),
            "changelly": changelly_sell,
        }[provider](order_id)
        resp = self.api("POST", f"/api/orders/{provider}", json=request)
        assert resp.status_code == 201, resp.text

    def registered(self, name: str) -> None:
        wait_for(f"worker {name} registered", lambda: self.redis.exists(f"rq:worker:{name}") == 1, 20)

    def callbacks_recorded(self, provider: str, order_id: str) -> list[str]:
        """The statuses of the callbacks the store holds for an order (claimed ones too)."""
        view = self.api("GET", f"/api/orders/{provider}/{order_id}").json()
        return [
            e["provider_status"] or e.get("claimed_status")
            for e in view["timeline"]
            if e["source"] == "callback"
        ]

    def worker(self, name: str) -> Member:
        return self.fleet.start(name, rampwatch_argv("worker", "--name", name))

    def clock(self, name: str = "clock") -> Member:
        return self.fleet.start(name, rampwatch_argv("clock"))

    def api(self, method: str, path: str, *, ops: bool = False, **kw: Any) -> requests.Response:
        """A call with the partner's token, or with ``ops`` the operator's (reconcile)."""
        headers = {"Authorization": f"Bearer {E2E_OPS_TOKEN if ops else E2E_TOKEN}"}
        return requests.request(method, self.base + path, headers=headers, timeout=10, **kw)

    def status(self, provider: str, order_id: str) -> str | None:
        order = self.runtime.store.order_view(provider, order_id)
        return None if order is None else order.status

    def job_status(self, job_id: str) -> str | None:
        try:
            return Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer).get_status(
                refresh=True
            )
        except Exception:
            return None

    def alive(self, name: str) -> bool:
        return bool(self.redis.exists(f"rampwatch:alive:{name}"))

    def at_truth(self, provider: str, sandbox: Any, order_ids: list[str], statuses: dict[str, str]) -> bool:
        """Whether every order's stored status is the one its sandbox's truth maps to."""
        truth = sandbox.truth()
        return all(self.status(provider, oid) == statuses[truth[oid]] for oid in order_ids)

    def restart_redis(
        self, down_for: float, *, kill: bool = False, during: Callable[[], None] | None = None
    ) -> None:
        """Stop Redis (SIGTERM, or SIGKILL with ``kill``), keep it down ``down_for`` seconds
        (running ``during`` meanwhile), start it again on the same port."""
        self.redis_server.halt(kill=kill)
        started = time.monotonic()
        if during is not None:
            during()
        time.sleep(max(0.0, down_for - (time.monotonic() - started)))
        self.redis_server.start()


def _postgres_database() -> Iterator[tuple[str, str, str]]:
    """A private PostgreSQL database (its URL, the admin URL, its name), dropped afterwards."""
    assert POSTGRES_URL
    name = f"rw_fault_{uuid.uuid4().hex[:10]}"
    admin_url = _pg_url("public")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        upgrade(url)
        yield url, admin_url, name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def fault_stack(
    tmp_path: Path,
    keys: Keys,
    sandbox: AlixSandbox,
    changelly_sandbox: ChangellySandbox,
    fuspay_sandbox: FuspaySandbox,
    *,
    aof: bool = True,
    postgres: bool = False,
) -> Iterator[Faults]:
    """The stack described in the module docstring, torn down after the test."""
    redis_server = PrivateRedis(appendonly=aof).start()
    pg = None
    if postgres:
        pg = _postgres_database()
        database_url, admin_url, database_name = next(pg)
    else:
        database_url, admin_url, database_name = f"sqlite:///{tmp_path / 'faults.sqlite3'}", None, None
        upgrade(database_url)
    quick = connect(redis_server.url)
    settings = Settings(
        database_url=database_url,
        redis_url=redis_server.url,
        api_token=E2E_TOKEN,
        ops_token=E2E_OPS_TOKEN,
        providers={
            "alixpay": alix_settings(keys, sandbox.url),
            "changelly": changelly_settings(keys, changelly_sandbox.url),
            "fuspay": fuspay_settings(fuspay_sandbox.url),
        },
    )
    runtime = build_services(settings, redis=quick)
    app = create_app(settings, redis=quick, store=runtime.store, adapters=runtime.adapters)
    server = serve_receiver(app, sandbox, changelly_sandbox, fuspay_sandbox)
    base = server.base
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ALIXPAY_", "FUSPAY_", "CHANGELLY_"))},
        **alix_env(keys, sandbox.url),
        **changelly_env(keys, changelly_sandbox.url),
        **fuspay_env(fuspay_sandbox.url),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "RAMPWATCH_API_TOKEN": E2E_TOKEN,
        "RAMPWATCH_OPS_TOKEN": E2E_OPS_TOKEN,
        "RAMPWATCH_LOG_LEVEL": "INFO",
        "RAMPWATCH_SWEEP_INTERVAL": "1",
        "RAMPWATCH_POLL_LEASE": "5s",
        "RAMPWATCH_STREAM_CLAIM_IDLE": "2",
        "ALIXPAY_POLL_BACKOFF": "1s,2s",
        "FUSPAY_POLL_BACKOFF": "1s,2s",
        "CHANGELLY_POLL_BACKOFF": "1s,2s",
        "ALIXPAY_TIMEOUT": "2",
        "FUSPAY_TIMEOUT": "2",
        "CHANGELLY_TIMEOUT": "2",
        "PYTHONPATH": str(ROOT),
    }
    # Not the checkout: a `.env` there (make run links one) must not reach these processes.
    fleet = Fleet(env, tmp_path, tmp_path / "logs")
    stack = Faults(
        redis_server,
        Redis.from_url(redis_server.url, socket_timeout=10),
        runtime,
        sandbox,
        changelly_sandbox,
        fuspay_sandbox,
        database_url,
        base,
        env,
        fleet,
        admin_url,
        database_name,
    )
    try:
        yield stack
    finally:
        fleet.stop()
        for member in fleet.members:
            print(f"----- {member.name} (exit {member.returncode}) -----\n{member.output()[-6000:]}")
        server.close()
        runtime.store.engine.dispose()
        quick.close()
        stack.redis.close()
        redis_server.stop()
        if pg is not None:
            pg.close()


@contextmanager
def postgres_cut(faults: Faults, every: float) -> Iterator[None]:
    """While the block runs, PostgreSQL refuses new connections to the stack's database
    and its sessions are killed every ``every`` seconds; afterwards it takes them again."""
    admin = create_engine(str(faults.admin_url), isolation_level="AUTOCOMMIT")
    cut = threading.Event()

    def keep_cutting() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{faults.database_name}" ALLOW_CONNECTIONS false'))
            while not cut.is_set():
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                    {"n": faults.database_name},
                )
                cut.wait(every)
            conn.execute(text(f'ALTER DATABASE "{faults.database_name}" ALLOW_CONNECTIONS true'))

    cutter = threading.Thread(target=keep_cutting, daemon=True)
    cutter.start()
    try:
        yield
    finally:
        cut.set()
        cutter.join(10)
        admin.dispose()
