"""Real database refusals for tests: a trigger that rejects the insert of one event's row."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text


@contextmanager
def poisoned(engine: Engine, marker: str) -> Iterator[None]:
    """While inside, the database refuses to record any event whose raw body contains
    ``marker`` (a trigger raising an error), on SQLite and PostgreSQL alike."""
    like = f"%{marker}%"
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.raw_body LIKE :like "
                    "BEGIN SELECT RAISE(ABORT, 'poisoned event'); END".replace(":like", "'" + like + "'")
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF NEW.raw_body LIKE '{like}' THEN RAISE EXCEPTION 'poisoned event'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            conn.execute(
                text("CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison()")
            )
    try:
        yield
    finally:
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.execute(text("DROP TRIGGER IF EXISTS poison"))
            else:
                conn.execute(text("DROP TRIGGER IF EXISTS poison ON events"))
                conn.execute(text("DROP FUNCTION IF EXISTS poison()"))
