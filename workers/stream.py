"""The callback stream: verified callbacks travel from the receiver to the workers through a
Redis Stream, drained in batches by a consumer group (``workers.drain``).

Why a stream and not one RQ job per callback: an RQ job costs the receiver two round
trips (a pipeline and the unique-job script) and a worker about twenty (dequeue,
registries, heartbeat, result) around an apply of one event in one transaction. An
entry costs the receiver one ``XADD``, and a worker one ``XREADGROUP`` and one
``XACK``+``XDEL`` per batch of up to ``RAMPWATCH_STREAM_BATCH`` events, applied in one
transaction.

What the RQ job gave still holds:

* the receiver answers 200 only once Redis has accepted the entry (``append``);
* an entry a consumer read is *pending* until acknowledged; one whose consumer died,
  or whose apply failed, is taken over after ``claim_idle`` by any consumer
  (``claim``, Redis's ``XAUTOCLAIM``) and applied again: the store's dedup makes that
  exactly once;
* an entry delivered ``max_deliveries`` times without being applied, or refused as
  bad data, moves to the dead-letter stream (``dead_letter``), where operators list and
  requeue it beside RQ's failed jobs (``DeadEvents``, ``workers.deadletters``);
* the stream is trimmed of acknowledged entries only: an entry is deleted when it is
  acknowledged (``ack``), never by length.

The receiver may import this module (``tests/test_architecture.py``); it imports nothing
of the worker side.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from orders.errors import BadEventPayload
from orders.events import Event

STREAM = "rampwatch:callbacks"
GROUP = "appliers"
DEAD = "rampwatch:callbacks:dead"
FIELD = b"e"  # the event, as the JSON of Event.to_dict()
MAX_ERROR = 500

# KEYS[1] stream; ARGV: group, min idle (ms), the consumer to keep. XINFO CONSUMERS answers
# one flat field/value list per consumer.
FORGET_IDLE = """
local gone = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local fields = {}
  for i = 1, #consumer, 2 do fields[consumer[i]] = consumer[i + 1] end
  if fields['pending'] == 0 and fields['idle'] >= tonumber(ARGV[2]) and fields['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
    gone = gone + 1
  end
end
return gone
"""


@dataclass(frozen=True)
class Entry:
    id: str
    payload: bytes | None  # None: the entry was deleted while pending (trimmed by hand)
    deliveries: int = 1

    def event(self) -> Event:
        """The event; ``BadEventPayload`` (bad data: no retry can help) when unreadable."""
        try:
            payload = json.loads(self.payload or b"")
        except ValueError as exc:
            raise BadEventPayload(f"stream entry {self.id} is not an event: {exc}") from None
        if not isinstance(payload, dict):
            raise BadEventPayload(f"stream entry {self.id} is not an event")
        return Event.from_dict(payload)


class EventStream:
    """The callback stream and its consumer group on one Redis connection."""

    def __init__(self, redis: Redis, *, stream: str = STREAM, group: str = GROUP, dead: str = DEAD):
        self.redis = redis
        self.stream = stream
        self.group = group
        self.dead = dead
        self._group_ready = False
        self._appenders = threading.local()

    # ------------------------------------------------------------------ the receiver's side

    def append(self, event: Event) -> str:
        """Queue ``event``; the entry's id once Redis has it. Raises redis errors."""
        client = self._appender()
        conn = client.connection
        assert conn is not None  # a single-connection client holds its connection
        stream, data = self.stream, encode(event)

        def xadd() -> Any:
            conn.send_command("XADD", stream, "*", FIELD, data)
            return conn.read_response()

        try:
            # What ``client.xadd`` does, without the client's per-command layers (its
            # lock, response callbacks and operation metrics: a third of the command's
            # CPU time in the receiver): the same retry policy, each failed attempt
            # dropping the connection so that the next one connects afresh (an entry
            # whose answer was lost may be appended twice; the store's dedup absorbs it).
            return _text(conn.retry.call_with_retry(xadd, lambda _error: conn.disconnect()))
        except RedisConnectionError:
            # Our clients retry on a fresh connection (``workers.queue.connect``); one that
            # does not: the next append takes a connection the pool has checked.
            self._appenders.client = None
            client.close()
            raise

    def _appender(self) -> Redis:
        """This thread's client for ``append``, holding one connection of the pool: the
        receiver's threads append at every callback, and a pooled command pays the pool's
        checkout (a lock, a readiness poll of the socket) and release each time, a tenth of
        a callback's time. Made again after a failure to connect (Redis down: the error
        is raised, a 503)."""
        client = getattr(self._appenders, "client", None)
        if client is None:
            client = Redis(connection_pool=self.redis.connection_pool, single_connection_client=True)
            self._appenders.client = client
        return client

    def append_many(self, events: Iterable[Event]) -> list[str]:
        """Queue many events in one round trip (benchmarks, requeues)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(self.stream, {FIELD: encode(event)})
            return [_text(i) for i in pipe.execute()]

    # ------------------------------------------------------------------ the consumers' side

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) once; reading from the stream's start,
        so entries queued before any worker ever ran are read too."""
        if self._group_ready:
            return
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def read(self, consumer: str, count: int, block_ms: int | None = None) -> list[Entry]:
        """Up to ``count`` entries never delivered before, waiting up to ``block_ms`` for one."""
        self.ensure_group()
        try:
            answer = self.redis.xreadgroup(
                self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False  # the stream was deleted (FLUSHDB): make it again
            self.ensure_group()
            return []
        entries: list[Entry] = []
        for _name, items in answer or ():
            entries.extend(Entry(_text(i), fields.get(FIELD)) for i, fields in items)
        return entries

    def claim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over up to ``count`` entries pending longer than ``min_idle_ms`` (a dead
        consumer's, or a failed apply's), with how many times each has been delivered."""
        self.ensure_group()
        try:
            answer = self.redis.xautoclaim(self.stream, self.group, consumer, min_idle_ms, "0-0", count=count)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False
            return []
        claimed = answer[1]
        deleted = [_text(i) for i in (answer[2] if len(answer) > 2 else ())]
        if deleted:  # deleted while pending (trimmed by hand): nothing to apply, forget them
            self.redis.xack(self.stream, self.group, *deleted)
        if not claimed:
            return []
        ids = [_text(i) for i, _ in claimed]
        counts = self._deliveries(ids)
        return [
            Entry(_text(i), (fields or {}).get(FIELD), counts.get(_text(i), 1))
            for i, fields in claimed
            if fields is not None
        ]

    def _deliveries(self, ids: Sequence[str]) -> dict[str, int]:
        with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.xpending_range(self.stream, self.group, min=i, max=i, count=1)
            answers = pipe.execute()
        counts: dict[str, int] = {}
        for rows in answers:
            for row in rows:
                counts[_text(row["message_id"])] = int(row["times_delivered"])
        return counts

    def give_back(self, consumer: str, entry: Entry, idle_ms: int) -> None:
        """An entry whose apply failed for want of the database: its delivery does not
        count against ``max_deliveries`` (an outage of any length dead-letters nothing),
        and it may be taken over at once (``idle_ms``: the claim's idle time)."""
        self.redis.xclaim(
            self.stream,
            self.group,
            consumer,
            0,
            [entry.id],
            idle=idle_ms,
            retrycount=max(entry.deliveries - 1, 0),
            justid=True,
        )

    def ack(self, ids: Sequence[str]) -> None:
        """Acknowledge applied entries and delete them: the stream keeps only what is not done."""
        if not ids:
            return
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, *ids)
            pipe.xdel(self.stream, *ids)
            pipe.execute()

    def dead_letter(self, entry: Entry, error: str) -> str:
        """Move ``entry`` to the dead-letter stream, with its error, in one transaction."""
        fields = {
            FIELD: entry.payload or b"",
            b"entry": entry.id,
            b"error": error[:MAX_ERROR],
            b"deliveries": str(entry.deliveries),
            b"failed_at": datetime.now(UTC).isoformat(),
        }
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead, fields)
            pipe.xack(self.stream, self.group, entry.id)
            pipe.xdel(self.stream, entry.id)
            dead_id, *_ = pipe.execute()
        return _text(dead_id)

    def forget_idle_consumers(self, min_idle_ms: int, keep: str) -> int:
        """Delete the group's consumers that hold nothing and were idle ``min_idle_ms``
        (workers that stopped; each start is a new consumer), all but ``keep``. One script,
        so that no consumer can read an entry between the check and its deletion (which
        would drop the entry from the pending list). How many were deleted."""
        self.ensure_group()
        return int(self.redis.eval(FORGET_IDLE, 1, self.stream, self.group, min_idle_ms, keep))

    def live_consumers(self, within_ms: int) -> int:
        """How many of the group's consumers were given entries within the last
        ``within_ms`` (at least 1: the caller): those sharing what arrives now. Redis 7.2
        says so in ``inactive``; before it, ``idle`` meant the same."""
        try:
            consumers = self.redis.xinfo_consumers(self.stream, self.group)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc) and "no such key" not in str(exc):
                raise
            return 1
        recent = 0
        for consumer in consumers:
            since = int(consumer.get("inactive", consumer["idle"]))
            recent += 0 <= since < within_ms
        return max(1, recent)

    # ------------------------------------------------------------------ for operators

    def depths(self) -> dict[str, int]:
        """Entries waiting to be read, read and not yet applied, and dead letters."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.stream)
            pipe.xlen(self.dead)
            pipe.xinfo_groups(self.stream) if self.redis.exists(self.stream) else pipe.echo("")
            length, dead, groups = pipe.execute()
        pending = 0
        for group in groups or ():
            if isinstance(group, dict) and _text(group.get("name", b"")) == self.group:
                pending = int(group.get("pending") or 0)
        return {
            "callbacks": max(int(length) - pending, 0),
            "callbacks_pending": pending,
            "callbacks_dead": int(dead),
        }


def stream_depths(redis: Redis) -> dict[str, int]:
    """The callback stream's depths (``EventStream.depths``) for /metrics and the console."""
    return EventStream(redis).depths()


def encode(event: Event) -> bytes:
    return json.dumps(event.to_dict(), separators=(",", ":")).encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
