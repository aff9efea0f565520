"""``/readyz`` and the schema: 503 naming the current and expected revisions until
the database is at the newest migration of this release, 200 once it is.

Revision ids are read from the migration scripts, never written here, so a new
migration changes nothing in these tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import text

from config import Settings
from orders.db import make_engine
from orders.migrate import Revisions, upgrade
from orders.providers import STATUS_MAPS
from orders.store import Store
from receiver import create_app

HEADS = Revisions.load().heads


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'health.sqlite3'}"


@pytest.fixture
def client(sqlite_url: str, redis: Redis) -> Iterator:
    port = redis.connection_pool.connection_kwargs["port"]
    settings = Settings(database_url=sqlite_url, redis_url=f"redis://127.0.0.1:{port}/0")
    store = Store(make_engine(sqlite_url), STATUS_MAPS, {})
    yield create_app(settings, redis=redis, store=store, adapters={}).test_client()
    store.engine.dispose()


def test_the_scripts_have_one_newest_revision() -> None:
    assert len(HEADS) == 1 and HEADS[0]
    assert set(HEADS) <= Revisions.load().known


def test_unmigrated_database_is_not_ready_and_says_so(client) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.get_json()
    assert body["status"] == "not ready"
    assert body["checks"] == {
        "redis": "ok",
        "database": "ok",
        "schema": f"at no revision, expected {HEADS[0]}; run `rampwatch migrate`",
    }


def test_migrated_database_is_ready(client, sqlite_url: str) -> None:
    upgrade(sqlite_url)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {
        "status": "ready",
        "checks": {"redis": "ok", "database": "ok", "schema": "ok"},
    }


def test_a_database_newer_than_this_release_is_not_ready(client, sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'from_a_later_release'"))
    engine.dispose()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["schema"] == (
        f"at from_a_later_release, expected {HEADS[0]}; the database is newer than this release"
    )


def test_an_unreachable_database_leaves_the_schema_unknown(redis: Redis) -> None:
    url = "postgresql+psycopg://rampwatch@127.0.0.1:1/nothing?connect_timeout=2"  # nothing listens on port 1
    port = redis.connection_pool.connection_kwargs["port"]
    store = Store(make_engine(url), STATUS_MAPS, {})
    app = create_app(
        Settings(database_url=url, redis_url=f"redis://127.0.0.1:{port}/0"), redis=redis, store=store
    )
    ready = app.test_client().get("/readyz")
    store.engine.dispose()
    assert ready.status_code == 503
    checks = ready.get_json()["checks"]
    assert checks["database"].startswith("unavailable (")
    assert checks["schema"] == "unknown (database unavailable)"


@pytest.mark.parametrize(
    ("current", "report"),
    [
        (("b",), "ok"),
        (("a",), "at a, expected b; run `rampwatch migrate`"),
        ((), "at no revision, expected b; run `rampwatch migrate`"),
        (("z",), "at z, expected b; the database is newer than this release"),
    ],
)
def test_report_behind_ahead_and_at_head(current: tuple[str, ...], report: str) -> None:
    assert Revisions(heads=("b",), known=frozenset({"a", "b"})).report(current) == report
