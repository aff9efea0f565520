"""Schema migrations (Alembic), run by ``rampwatch migrate`` and the Procfile ``release``.

The Alembic environment lives in ``orders/migrations``; it is configured here in
code so that no ``alembic.ini`` has to be found at run time. ``Revisions`` tells
what the scripts shipped with this code expect, so readiness can say whether a
database is at the newest schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from orders.db import make_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Bring the database at ``url_or_engine`` to ``revision`` (default: the newest)."""
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    command.upgrade(alembic_config(engine), revision)


def current_revisions(connection: Connection) -> tuple[str, ...]:
    """The revision(s) the database is at; empty when it was never migrated."""
    return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


@dataclass(frozen=True)
class Revisions:
    """The migration scripts shipped with this code: their newest revision(s) and all."""

    heads: tuple[str, ...]
    known: frozenset[str]

    @classmethod
    def load(cls) -> Revisions:
        """Read the scripts (imports each one): do it once per process, not per request."""
        scripts = ScriptDirectory(str(MIGRATIONS))
        return cls(
            heads=tuple(sorted(scripts.get_heads())),
            known=frozenset(rev.revision for rev in scripts.walk_revisions()),
        )

    def report(self, current: tuple[str, ...]) -> str:
        """``ok`` when ``current`` is the newest schema, else what is wrong and what to do."""
        if current == self.heads:
            return "ok"
        at = ", ".join(current) or "no revision"
        expected = ", ".join(self.heads)
        if any(rev not in self.known for rev in current):
            # A newer release migrated this database; migrating from here cannot help.
            return f"at {at}, expected {expected}; the database is newer than this release"
        return f"at {at}, expected {expected}; run `rampwatch migrate`"
