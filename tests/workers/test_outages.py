"""The patient Redis client and the database-outage rules (``workers.outages``), in-process.

The fault tests (tests/faults/) show the same through real worker and clock processes;
these pin the rules themselves, quickly.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError

from devkit.localredis import PrivateRedis
from orders.db import make_engine
from workers.outages import DatabaseWatch, Patience, connect_patient, database_unavailable, patience_of
from workers.queue import connect


@pytest.fixture
def restartable() -> PrivateRedis:
    server = PrivateRedis(appendonly=True).start()
    yield server
    server.stop()


def test_a_patient_client_waits_out_a_restart_and_keeps_what_aof_kept(restartable: PrivateRedis) -> None:
    patience = Patience("test")
    client = connect_patient(restartable.url, patience, timeout=2)
    assert patience_of(client) is patience and patience_of(connect(restartable.url)) is None
    client.set("kept", "1")
    time.sleep(1.2)  # appendfsync everysec
    restartable.halt()
    got: list[tuple[bytes | None, float]] = []
    started = time.monotonic()
    # The call runs on a thread: the server must be restarted by this one, which it dies with.
    caller = threading.Thread(target=lambda: got.append((client.get("kept"), time.monotonic() - started)))
    caller.start()
    time.sleep(1.5)
    restartable.start()
    caller.join(10)
    assert got and got[0][0] == b"1"  # the call waited for the server to come back
    assert got[0][1] >= 1.4
    assert patience.up_for() < 5


def test_the_quick_client_gives_up_at_once_and_a_stop_ends_the_patient_wait(
    restartable: PrivateRedis,
) -> None:
    restartable.halt()
    quick = connect(restartable.url)
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        quick.ping()
    assert time.monotonic() - started < 1.0
    patience = Patience("test")
    patient = connect_patient(restartable.url, patience, timeout=2)
    threading.Timer(1.0, patience.stop.set).start()
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        patient.ping()
    assert 0.9 <= time.monotonic() - started < 4.0


def _sqlite_error(message: str) -> OperationalError:
    return OperationalError("INSERT ...", {}, sqlite3.OperationalError(message))


def test_what_counts_as_the_database_being_down() -> None:
    assert database_unavailable(_sqlite_error("database is locked"))
    assert database_unavailable(_sqlite_error("unable to open database file"))
    assert database_unavailable(InterfaceError("SELECT 1", {}, Exception("connection already closed")))
    # A bug or a missing migration is not an outage: waiting would not fix it.
    assert not database_unavailable(_sqlite_error("no such table: orders"))
    assert not database_unavailable(_sqlite_error('near "SELEC": syntax error'))
    assert not database_unavailable(ProgrammingError("SELECT", {}, Exception("undefined column")))
    assert not database_unavailable(ValueError("not a database error"))


def test_the_watch_waits_for_a_locked_sqlite_database_and_stops_when_told(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'watch.sqlite3'}"
    engine = make_engine(url)  # the store's engine: every transaction takes the write lock
    outside = sqlite3.connect(tmp_path / "watch.sqlite3", isolation_level=None, check_same_thread=False)
    outside.execute("BEGIN IMMEDIATE")
    watch = DatabaseWatch()
    watch.note_down()
    assert watch.is_down
    threading.Timer(1.0, lambda: outside.execute("ROLLBACK")).start()
    beats: list[float] = []
    started = time.monotonic()
    assert watch.wait_until_up(engine, stopping=lambda: False, keep_alive=lambda: beats.append(1))
    assert time.monotonic() - started >= 0.9  # not before the outside transaction ended
    assert not watch.is_down and beats
    watch.note_down()
    assert watch.wait_until_up(engine, stopping=lambda: True) is False
    assert watch.is_down
    outside.close()
    engine.dispose()
