"""What every ``rampwatch`` command shares: the settings, the database and Redis opened
with clean errors, output (tables, JSON, progress) and the exit policy.

Error policy: a command fails with one line on stderr, ``rampwatch <command>: <why>``,
and exit code 1 (2 for bad settings or usage), never a traceback for something an
operator can fix: bad settings list every problem; a SQLite database that does not
exist is never created (only ``migrate`` creates one); a database without the
schema says to run ``rampwatch migrate``; an unreachable database or Redis names
the setting. A closed pipe (``rampwatch orders list | head``) ends the command
silently (``RampwatchGroup``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from config import ConfigError, Settings

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy import Engine

    from orders.store import Store
    from workers.services import Services

T = TypeVar("T")

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left


class Failure(click.ClickException):
    """A command's failure: one line on stderr naming the command, and ``code``."""

    def __init__(self, message: str, code: int = 1, *, where: str | None = None):
        super().__init__(message)
        self.exit_code = code
        ctx = click.get_current_context(silent=True)
        self.where = where or (ctx.command_path if ctx is not None else "rampwatch")

    def show(self, file: Any = None) -> None:
        click.echo(f"{self.where}: {self.format_message()}", err=True)


class RampwatchGroup(click.Group):
    """The root group: turns what goes wrong outside a command's own checks into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        from redis.exceptions import RedisError
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            silence_stdout()
            raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None
        except SQLAlchemyError as exc:
            settings = ctx.obj.loaded if isinstance(ctx.obj, Runtime) else None
            where = f" at {settings.safe_database_url}" if settings else ""
            raise Failure(f"database error{where}: {_first_line(exc)}") from exc
        except RedisError as exc:
            settings = ctx.obj.loaded if isinstance(ctx.obj, Runtime) else None
            where = f" at {settings.safe_redis_url} (REDIS_URL)" if settings else ""
            raise Failure(f"Redis unavailable{where}: {type(exc).__name__}") from exc


def silence_stdout() -> None:
    """The reader of stdout has gone: send whatever is still buffered nowhere, so that
    the interpreter's last flush at exit does not complain on stderr."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (a test's captured stdout)
        pass


def _first_line(exc: BaseException) -> str:
    """An error's class and first line: never the statement or its parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0]}" if text else type(orig).__name__


class Runtime:
    """Per invocation: the settings, loaded once, and what is opened from them (closed
    when the command ends)."""

    def __init__(self) -> None:
        self.loaded: Settings | None = None
        self._store: Store | None = None
        self._services: Services | None = None
        self._redis: Redis | None = None

    @property
    def settings(self) -> Settings:
        if self.loaded is None:
            from orders.providers import load_settings

            try:
                self.loaded = load_settings()
            except ConfigError as exc:
                raise Failure(str(exc), code=2) from exc
        return self.loaded

    def store(self) -> Store:
        """The order store, on a database that exists and has this release's schema."""
        if self._store is None:
            from orders.providers import STATUS_MAPS, poll_policies
            from orders.store import Store

            engine = open_database(self.settings)
            self._store = Store(engine, STATUS_MAPS, poll_policies(self.settings))
        return self._store

    def reader(self) -> Store:
        """The store for reading: the same database, transactions that take no write lock."""
        from orders.db import reading
        from orders.store import Store

        store = self.store()
        return Store(reading(store.engine), store.status_maps, store.poll_policies, store.clock)

    def services(self) -> Services:
        """Every collaborator (Redis, the store, the enabled providers' adapters, the queues)."""
        if self._services is None:
            from workers.services import build_services

            self._services = build_services(self.settings, store=self.store())
        return self._services

    def redis(self) -> Redis:
        if self._services is not None:
            return self._services.redis
        if self._redis is None:
            from workers.queue import connect

            settings = self.settings
            self._redis = connect(settings.redis_url, tls_verify=settings.redis_tls_verify)
        return self._redis

    def close(self) -> None:
        if self._services is not None:
            self._services.metrics.stop()  # what this command applied is counted too
            self._services.redis.close()
        if self._redis is not None:
            self._redis.close()
        if self._store is not None:
            self._store.engine.dispose()


pass_runtime = click.make_pass_decorator(Runtime, ensure=True)


def open_database(settings: Settings) -> Engine:
    """An engine on ``DATABASE_URL`` after checking that the database is there and has
    the newest schema. A SQLite file that does not exist is not created."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from orders.db import make_engine, reading
    from orders.migrate import Revisions, current_revisions

    url = make_url(settings.database_url)
    safe = settings.safe_database_url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        if not Path(url.database).is_file():
            raise Failure(
                f"no database at {url.database} (DATABASE_URL): run `rampwatch migrate` to create it"
            )
    engine = make_engine(settings.database_url)
    try:
        with reading(engine).connect() as conn:
            current = current_revisions(conn)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise Failure(f"cannot read the database at {safe} (DATABASE_URL): {_first_line(exc)}") from exc
    if not current:
        engine.dispose()
        raise Failure(f"the database at {safe} has no schema: run `rampwatch migrate`")
    report = Revisions.load().report(current)
    if report != "ok" and "newer than this release" not in report:
        engine.dispose()
        raise Failure(f"the database at {safe} is {report}")
    return engine


# ------------------------------------------------------------------ parameters


class When(click.ParamType):
    """An ISO date or date-time (UTC when it names no zone), or an age: ``90m``, ``6h``, ``2d``."""

    name = "when"
    AGE = re.compile(r"^(\d+)([smhd])$")
    UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        age = self.AGE.match(text)
        if age:
            return datetime.now(UTC) - timedelta(**{self.UNITS[age.group(2)]: int(age.group(1))})
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"not an ISO date or date-time, nor an age like 6h or 2d: {text!r}", param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


WHEN = When()


def provider_choice() -> click.Choice:
    """The registered providers' slugs (``orders.providers.REGISTRY``)."""
    from orders.providers import PROVIDERS

    return click.Choice(sorted(PROVIDERS))


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON).")


# ------------------------------------------------------------------ output


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; on a terminal, long cells are cut to fit."""
    cells = [[_cell(v) for v in row] for row in rows]
    if sys.stdout.isatty():
        cut = max(12, shutil.get_terminal_size().columns // max(len(headers), 1))
        cells = [[c if len(c) <= cut else c[: cut - 1] + "…" for c in row] for row in cells]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value).replace("\n", " ")


def when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@contextmanager
def progress(
    items: Iterable[T], length: int | None, label: str, *, output_on_terminal: bool
) -> Iterator[Iterable[T]]:
    """``items``, with a progress bar on stderr when stderr is a terminal and the
    command's own output is not going to that terminal (the bar would tear it)."""
    if sys.stderr.isatty() and not output_on_terminal and (length is None or length > 1):
        with click.progressbar(items, length=length, label=label, file=sys.stderr) as bar:
            yield bar
    else:
        yield items


def say(message: str) -> None:
    """A remark for the operator, on stderr (stdout stays the data)."""
    click.echo(message, err=True)


def checked(call: Callable[[], T]) -> T:
    """``call()``, a ``RampwatchError`` turned into one failing line."""
    from orders.errors import RampwatchError

    try:
        return call()
    except RampwatchError as exc:
        raise Failure(f"{type(exc).__name__}: {exc}") from exc
