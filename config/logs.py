"""Process logging set-up: one line per event worth reading, as text or JSON, ids attached,
personal data masked.

* ``configure_logging(level, fmt)`` gives the root logger one handler on stderr
  (``text``: ``time LEVEL logger: message [request=... provider=... order=... job=...]``;
  ``json``: one object per line through python-json-logger, with the fields ``time``,
  ``level``, ``logger``, ``message``, the ids that are known, and ``exc_info``).
  RQ's loggers are held at WARNING whatever the level: they write several lines per
  job (and the clock queues a sweep every few seconds), and their arguments are raw
  callback bodies. Extra attributes a library puts on a record (RQ adds a job's
  arguments) are never written: the JSON fields are a fixed list.
* Ids come from context variables (``log_context`` / ``bind``): the web binds a request
  id (``X-Request-ID`` when it is a sane token, else a new one) and, in a webhook, the
  provider and the order; a job binds the RQ job id, the provider and the order.
* ``mask`` replaces e-mail addresses, phone numbers (``+`` and 7 to 15 digits), IBANs and
  bank account numbers (a run of 8 or more digits, single spaces allowed, that is not part
  of a longer word: so hex ids, ``order-12345678`` and ISO times stay) with a placeholder
  keeping at most the last four digits. The handler's ``MaskingFilter`` applies it to
  every record's message and arguments, and the formatters to exception and stack text,
  so a personal value in an exception (SQLAlchemy's parameters, a provider's answer) is
  masked too. A 10-digit Unix time in a message would be masked as well: our messages
  print ISO times. Names cannot be recognised by shape: log lines carry ids and statuses,
  never bodies; the code that logs stays responsible for that.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

__all__ = [
    "CONTEXT_FIELDS",
    "ContextFilter",
    "JsonFormatter",
    "MaskingFilter",
    "TextFormatter",
    "bind",
    "configure_logging",
    "current_context",
    "log_context",
    "mask",
    "mask_data",
]

LOG_FORMATS = ("text", "json")
# Loggers that speak per job, per dequeue or per scheduler pass: WARNING and up only.
QUIET_LOGGERS = ("rq", "rq.worker", "rq.job", "rq.queue", "rq.scheduler", "rq.registry", "rq.cron")
# The ids a line may carry, in the order the text format prints them.
CONTEXT_FIELDS = ("request_id", "provider", "order_id", "job_id", "entry_id")
_TEXT_NAMES = {
    "request_id": "request",
    "provider": "provider",
    "order_id": "order",
    "job_id": "job",
    "entry_id": "entry",  # a callback stream entry (workers.stream)
}

_CONTEXT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "rampwatch_log_context", default=MappingProxyType({})
)

# ------------------------------------------------------------------ masking

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_PHONE = re.compile(r"(?<![\w+])\+\d(?:[ ().-]{0,2}\d){6,14}(?!\w)")
# 8+ digits, single spaces allowed: not inside a word (hex ids), nor after or before "-"
# (``order-12345678``, ISO dates are 4-2-2), so the ids and times the logs rely on stay.
_DIGITS = re.compile(r"(?<![\w-])\d(?: ?\d){7,}(?![\w-])")


def _tail(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return digits[-4:]


# What each pattern above cannot match without: an "@" (or "%40"), two capitals and two
# digits, a "+" and a digit, eight digits with single spaces. Text with none of them is
# left as it is without the four passes: most of a log line's ids and messages.
_MAYBE = re.compile(r"@|%40|[A-Z]{2}\d{2}|\+\d|\d(?: ?\d){7}")


def mask(text: str) -> str:
    """``text`` with e-mail addresses, IBANs, phone numbers and account numbers masked."""
    if not text or _MAYBE.search(text) is None:
        return text
    return _masked(text)


def _masked(text: str) -> str:
    """The four passes of ``mask``."""
    text = _EMAIL.sub("***@***", text)
    text = _IBAN.sub(lambda m: "****" + _tail(m.group()), text)
    text = _PHONE.sub(lambda m: "+****" + _tail(m.group()), text)
    return _DIGITS.sub(lambda m: "****" + _tail(m.group()), text)


def mask_data(value: Any, depth: int = 0) -> Any:
    """``value`` with ``mask`` applied to every string in it (dicts, lists, tuples)."""
    if depth > 20:
        return value
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, bytes):
        return mask(value.decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {k: mask_data(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_data(v, depth + 1) for v in value)
    return value


# ------------------------------------------------------------------ context ids


def current_context() -> Mapping[str, str]:
    return _CONTEXT.get()


def bind(**ids: object) -> None:
    """Add ids (``request_id``, ``provider``, ``order_id``, ``job_id``) to this context's
    lines; None leaves an id as it is. Scoped by the enclosing ``log_context``."""
    unknown = set(ids) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields: {sorted(unknown)}")
    known = {k: str(v) for k, v in ids.items() if v is not None and str(v)}
    if known:
        _CONTEXT.set({**_CONTEXT.get(), **known})


@contextlib.contextmanager
def log_context(**ids: object) -> Iterator[None]:
    """Ids for the lines logged inside the block (and ``bind`` calls in it); restored after."""
    token = _CONTEXT.set(dict(_CONTEXT.get()))
    try:
        bind(**ids)
        yield
    finally:
        _CONTEXT.reset(token)


def enter_context(**ids: object) -> contextvars.Token[Mapping[str, str]]:
    """``log_context`` for callers that cannot use a ``with`` (Flask's before/teardown
    request hooks): reset with ``exit_context(token)``."""
    token = _CONTEXT.set(dict(_CONTEXT.get()))
    bind(**ids)
    return token


def exit_context(token: contextvars.Token[Mapping[str, str]]) -> None:
    _CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    """Puts the context's ids on the record (attributes ``request_id``, ``provider``, ...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


class MaskingFilter(logging.Filter):
    """Masks personal data in a record's message and arguments, and in its ids."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, dict):
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: keep logging's own complaint out of the way
                message = f"{record.msg!s} {record.args!r}"
            record.msg = mask(message)
            record.args = None
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if isinstance(value, str):
                setattr(record, key, mask(value))
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True


class _Masking(logging.Formatter):
    """Exception and stack text are masked as they are formatted."""

    def formatException(self, ei: Any) -> str:
        return mask(str(super().formatException(ei)))

    def formatStack(self, stack_info: str) -> str:
        return mask(str(super().formatStack(stack_info)))


class TextFormatter(_Masking):
    """``2026-01-02 10:11:12,345 INFO rampwatch.jobs: message [request=... order=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [f"{_TEXT_NAMES[k]}={getattr(record, k)}" for k in CONTEXT_FIELDS if getattr(record, k, None)]
        record.context = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


class JsonFormatter(_Masking, _JsonFormatter):
    """One JSON object per line; fields: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, the known ids, ``exc_info``/``stack_info``. Nothing else a record carries
    is written (RQ puts a job's arguments on its records)."""

    def __init__(self) -> None:
        super().__init__("%(message)s")

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = mask(record.getMessage()) if not isinstance(record.msg, dict) else ""
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value:
                log_data[key] = value
        for key in ("exc_info", "stack_info"):
            if message_dict.get(key):
                log_data[key] = mask(str(message_dict[key]))


def make_handler(fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler with the context and masking filters and the format's formatter."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, not {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(MaskingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.set_name("rampwatch")
    return handler


def quiet_level(level: str | int) -> int:
    """The level RQ's loggers run at: WARNING, or higher when ``level`` is."""
    number = level if isinstance(level, int) else logging.getLevelName(level.upper())
    return max(number if isinstance(number, int) else logging.INFO, logging.WARNING)


def configure_logging(level: str, fmt: str = "text", *, stream: IO[str] | None = None) -> logging.Handler:
    """Give the root logger our one handler (replacing one an earlier call installed) at
    ``level``; hold the chatty loggers at WARNING. Returns the handler."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "rampwatch"]:
        root.removeHandler(old)
    handler = make_handler(fmt, stream)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet = quiet_level(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    # /readyz reads the schema revision through Alembic, which announces its dialect
    # at INFO every time: a probe every few seconds must not fill the web log with it.
    logging.getLogger("alembic.runtime.migration").setLevel(quiet)
    logging.getLogger("rampwatch").setLevel(level.upper())
    return handler
