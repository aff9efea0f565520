"""The migrations build exactly the schema the models declare, on SQLite and PostgreSQL,
and go down and up again."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from orders.db import make_engine
from orders.migrate import alembic_config, upgrade
from orders.models import Base


def _diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_the_migrated_schema_is_the_models(database_url: str) -> None:
    assert _diff(database_url) == []


def test_the_newest_migration_goes_down_and_up_again(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        command.downgrade(alembic_config(engine), "-1")
    finally:
        engine.dispose()
    assert _diff(database_url) != []
    upgrade(database_url)
    assert _diff(database_url) == []


def test_orders_that_ended_before_terminal_at_was_kept_get_one(database_url: str) -> None:
    """0004's sweep indexes hold orders whose terminal_at is unset: an order that ended
    without one must not look open to them."""
    engine = make_engine(database_url)
    try:
        command.downgrade(alembic_config(engine), "0003")
        with engine.begin() as conn:
            for external_id, status in (("ended", "SUCCESS"), ("open", "PROCESSING")):
                conn.execute(
                    text(
                        "INSERT INTO orders (provider, external_order_id, status, rank, version, details,"
                        " poll_attempts, created_at, updated_at) VALUES ('alixpay', :id, :status, 0, 1,"
                        " '{}', 0, :at, :at)"
                    ),
                    {"id": external_id, "status": status, "at": datetime(2026, 1, 2, tzinfo=UTC)},
                )
    finally:
        engine.dispose()
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            ended = dict(conn.execute(text("SELECT external_order_id, terminal_at FROM orders")).all())
    finally:
        engine.dispose()
    assert ended["open"] is None and ended["ended"] is not None
