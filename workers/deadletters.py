"""Dead letters: work that failed for good, from every source, for the CLI (``rampwatch dlq``)
and the operator console alike.

Dead letters come from *sources* (``DeadLetterSource``): RQ's failed registries, one per
queue (``RQFailed``), and the dead-letter stream of callbacks that kept failing
(``workers.stream.DeadEvents``). A listing never shows a job's arguments as they are:
``apply_event`` carries the raw callback body (names, bank accounts), so only a summary
of named, harmless fields is shown (``summarise``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from redis import Redis
    from rq import Queue

# Of an event payload (``orders.events.Event``), what a listing may show.
EVENT_FIELDS = ("provider", "source", "external_order_id", "provider_order_id", "provider_status")
MAX_ARG = 64
STREAM_ID = re.compile(r"\d+-\d+")


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
    """Every source of dead letters: RQ's failed registry of each queue (``Queues.all``),
    then the dead-letter stream of callbacks."""
    from workers.queue import Queues

    return [*(RQFailed(q) for q in Queues(redis).all()), DeadEvents(redis)]


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


class DeadEvents:
    """The dead-letter stream of callbacks that kept failing (``workers.stream``)."""

    def __init__(self, redis: Redis):
        from workers.stream import EventStream

        self.events = EventStream(redis)
        self.redis = redis
        self.name = f"stream:{self.events.stream}"

    def _entries(self) -> list[tuple[str, dict[bytes, bytes]]]:
        return [(_text(i), fields) for i, fields in self.redis.xrange(self.events.dead)]

    def list(self) -> list[DeadLetter]:
        letters = []
        for letter_id, fields in self._entries():
            try:
                payload = json.loads(fields.get(b"e") or b"null")
            except ValueError:
                payload = "<unreadable>"
            failed = fields.get(b"failed_at")
            letters.append(
                DeadLetter(
                    source=self.name,
                    id=letter_id,
                    function="apply callback",
                    args=summarise("apply callback", [payload]),
                    error=_text(fields.get(b"error") or b"-"),
                    failed_at=datetime.fromisoformat(_text(failed)) if failed else None,
                )
            )
        return letters

    def requeue(self, letter_id: str) -> bool:
        """Back on the callback stream as a new entry, with its deliveries counted afresh."""
        if not STREAM_ID.fullmatch(letter_id):
            return False  # not a stream entry's id (an RQ job's, say)
        found = self.redis.xrange(self.events.dead, min=letter_id, max=letter_id)
        if not found:
            return False
        _, fields = found[0]
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.events.stream, {b"e": fields.get(b"e") or b""})
            pipe.xdel(self.events.dead, letter_id)
            pipe.execute()
        return True

    def purge(self) -> int:
        count = int(self.redis.xlen(self.events.dead))
        self.redis.delete(self.events.dead)
        return count


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
