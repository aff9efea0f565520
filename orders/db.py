"""Engines for the order store: SQLite (embedded default, WAL) and PostgreSQL.

SQLite: WAL journal, foreign keys on, a busy timeout, and every writing
transaction opened with ``BEGIN IMMEDIATE`` so that the writer takes the database
write lock before it reads the order (SQLite's stand-in for a row lock; pysqlite's
own deferred BEGIN would let two writers read the same version). PostgreSQL: row
locks with ``SELECT ... FOR UPDATE`` in ``orders.store``.

Readers do not take the write lock: ``reading(engine)`` is the same engine (same
pool) marked read-only, whose transactions open with a deferred ``BEGIN`` on SQLite
(in WAL mode a reader never waits for a writer) and are read-only on PostgreSQL.
The web tier reads through it, so a long write elsewhere does not hold /readyz or
the API's order views.

``wait`` bounds how long any statement waits for the database: SQLite's busy
timeout; on PostgreSQL the connect timeout, the pool's checkout timeout, and the
session's ``lock_timeout`` and ``statement_timeout``. Workers keep the long
default (a write that waits is better than a retried job); the web process
passes a few seconds, well below gunicorn's timeout, and answers 503 when it runs out.

Both keep bound parameters out of error messages (``hide_parameters``): an
event's raw body holds names, e-mails and phones, and a failed write's
exception text reaches the logs and RQ's failed registry.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
# The execution option that marks the read-only engine (``reading``).
READ_ONLY = "rampwatch_read_only"


def make_engine(url: str, *, wait: float | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url``; creates the SQLite file's folder when needed.

    ``wait``: the longest, in seconds, a statement waits for a lock, a connection or
    its own execution (None: SQLite waits 30 s, PostgreSQL has no limit)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        busy_ms = SQLITE_BUSY_TIMEOUT_MS if wait is None else int(wait * 1000)
        engine = create_engine(url, connect_args={"timeout": busy_ms / 1000}, hide_parameters=True, **kwargs)
        _sqlite_setup(engine, busy_ms)
        return engine
    if wait is not None:
        # The URL's own connect_timeout, if it has one, is the operator's choice.
        connect_args = (
            {} if "connect_timeout" in parsed.query else {"connect_timeout": max(1, math.ceil(wait))}
        )
        kwargs.setdefault("pool_timeout", wait)
        kwargs["connect_args"] = {**connect_args, **kwargs.get("connect_args", {})}
    engine = create_engine(url, pool_pre_ping=True, hide_parameters=True, **kwargs)
    if wait is not None:
        _postgres_timeouts(engine, int(wait * 1000))
    return engine


def reading(engine: Engine) -> Engine:
    """``engine`` for readers only: same pool, transactions that take no write lock."""
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["postgresql_readonly"] = True
    return engine.execution_options(**options)


def _sqlite_setup(engine: Engine, busy_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN IMMEDIATE is ours.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A reader's deferred BEGIN takes no lock in WAL mode; a writer's takes the write lock first.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


def _postgres_timeouts(engine: Engine, wait_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Session settings, set outside any transaction so that they stick.
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cur:
            cur.execute(f"SET lock_timeout = {wait_ms}")
            cur.execute(f"SET statement_timeout = {wait_ms}")
        dbapi_connection.autocommit = autocommit


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
