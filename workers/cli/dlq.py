"""``rampwatch dlq``: dead letters, i.e. jobs that failed for good, listed, requeued, purged.

Dead letters come from *sources* (``DeadLetterSource``): today RQ's failed
registries, one per queue (``RQFailed``); a Redis-stream dead letter can be added
as another source without touching the commands. A listing never prints a job's
arguments as they are: ``apply_event`` carries the raw callback body (names,
bank accounts), so only a summary of named, harmless fields is shown (``summarise``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import click

from workers.cli.common import Failure, Runtime, emit_json, json_option, pass_runtime, say, table, when

if TYPE_CHECKING:
    from redis import Redis
    from rq import Queue

# Of an event payload (``orders.events.Event``), what a listing may show.
EVENT_FIELDS = ("provider", "source", "external_order_id", "provider_order_id", "provider_status")
MAX_ARG = 64


@dataclass(frozen=True)
class DeadLetter:
    source: str  # e.g. rq:events
    id: str
    function: str
    args: str  # a summary, never the raw arguments
    error: str  # the error's last line
    failed_at: datetime | None


class DeadLetterSource(Protocol):
    name: str

    def list(self) -> list[DeadLetter]: ...

    def requeue(self, letter_id: str) -> bool:
        """Run it again; False when this source does not hold it."""
        ...

    def purge(self) -> int:
        """Delete every dead letter; how many."""
        ...


class RQFailed:
    """The failed-job registry of one RQ queue."""

    def __init__(self, queue: Queue):
        self.queue = queue
        self.name = f"rq:{queue.name}"
        self.registry = queue.failed_job_registry

    def _jobs(self) -> list[Any]:
        from rq.job import Job

        ids = self.registry.get_job_ids()
        jobs = Job.fetch_many(ids, connection=self.queue.connection, serializer=self.queue.serializer)
        return [j for j in jobs if j is not None]

    def list(self) -> list[DeadLetter]:
        return [
            DeadLetter(
                source=self.name,
                id=job.id,
                function=job.func_name or "?",
                args=summarise(job.func_name or "", _safe_args(job)),
                error=_last_line(job),
                failed_at=job.ended_at,
            )
            for job in self._jobs()
        ]

    def requeue(self, letter_id: str) -> bool:
        if letter_id not in self.registry.get_job_ids():
            return False
        self.registry.requeue(letter_id)
        return True

    def purge(self) -> int:
        jobs = self._jobs()
        for job in jobs:
            job.delete()
        for stale in self.registry.get_job_ids():  # ids whose job hash already expired
            self.registry.remove(stale)
        return len(jobs)


def sources(redis: Redis) -> list[DeadLetterSource]:
    """Every source of dead letters: RQ's failed registry of each queue (``Queues.all``)."""
    from workers.queue import Queues

    return [RQFailed(q) for q in Queues(redis).all()]


def summarise(function: str, args: Sequence[Any]) -> str:
    """A job's arguments as a listing may show them: of a dict (an event payload), the
    named fields ``EVENT_FIELDS`` only; scalars cut to ``MAX_ARG`` characters."""
    parts = []
    for arg in args:
        if isinstance(arg, dict):
            shown = {k: arg[k] for k in EVENT_FIELDS if arg.get(k) is not None}
            parts.append("{" + ", ".join(f"{k}={_cut(v)}" for k, v in shown.items()) + "}")
        elif isinstance(arg, list | tuple):
            parts.append(f"[{len(arg)} items]")
        else:
            parts.append(_cut(arg))
    return ", ".join(parts)


def _safe_args(job: Any) -> Sequence[Any]:
    try:
        return list(job.args or ())
    except Exception:  # an unreadable payload is listed, not fatal
        return ["<unreadable>"]


def _cut(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_ARG else text[: MAX_ARG - 1] + "…"


def _last_line(job: Any) -> str:
    result = job.latest_result()
    info = (result.exc_string if result is not None else None) or ""
    lines = [ln.strip() for ln in str(info).strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "-"


@click.group()
def dlq() -> None:
    """Dead letters: jobs that failed for good (RQ's failed registries of every queue)."""


@dlq.command("list")
@json_option
@pass_runtime
def list_letters(rt: Runtime, as_json: bool) -> None:
    """Failed jobs: id, function, a summary of its arguments (no raw bodies), the
    error's last line, when it failed."""
    letters = [letter for source in sources(rt.redis()) for letter in source.list()]
    letters.sort(key=lambda d: (d.failed_at is None, d.failed_at), reverse=True)
    if as_json:
        emit_json({"dead_letters": [{**asdict(d), "failed_at": when(d.failed_at)} for d in letters]})
        return
    if not letters:
        say("no dead letters")
        return
    rows = [(d.source, d.id, d.function.rsplit(".", 1)[-1], d.args, d.error, d.failed_at) for d in letters]
    click.echo(table(("source", "id", "function", "args", "error", "failed at"), rows))


@dlq.command("requeue")
@click.argument("letter_id", required=False)
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@json_option
@pass_runtime
def requeue(rt: Runtime, letter_id: str | None, everything: bool, as_json: bool) -> None:
    """Run a failed job again (ID), or every one (--all)."""
    if bool(letter_id) == everything:
        raise Failure("give one job ID or --all", code=2)
    done: list[str] = []
    for source in sources(rt.redis()):
        ids = [d.id for d in source.list()] if everything else [letter_id or ""]
        done += [f"{source.name} {i}" for i in ids if source.requeue(i)]
    if letter_id and not done:
        raise Failure(f"no dead letter {letter_id}")
    if as_json:
        emit_json({"requeued": done})
        return
    for item in done:
        click.echo(f"requeued {item}")
    if everything:
        click.echo(f"{len(done)} job(s) requeued")


@dlq.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_runtime
def purge(rt: Runtime, yes: bool, as_json: bool) -> None:
    """Delete every dead letter, for good: requeue first what should still run."""
    every = sources(rt.redis())
    count = sum(len(s.list()) for s in every)
    if count and not yes:
        click.confirm(f"delete {count} dead letter(s) for good?", abort=True, err=True)
    purged = sum(s.purge() for s in every) if count else 0
    if as_json:
        emit_json({"purged": purged})
    else:
        click.echo(f"{purged} dead letter(s) purged")
