"""The migrations build exactly the schema the models declare, on SQLite and PostgreSQL,
and go down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

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
