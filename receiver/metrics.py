"""``GET /metrics``: Prometheus text for the whole deployment, for the operator's token only.

The counters are the sums every process flushed to Redis (``config.metrics``): any
web process answers for all of them. The gauges are computed at scrape time:

* from Redis, in the same pipeline as the counters: each queue's depth, its
  scheduled jobs (retries and deferred polls waiting) and its failed jobs; then the
  callback stream's entries waiting, pending and dead-lettered;
* from the database, through the read-only engine, in one query over the open
  orders only (``status`` in the open states, read through the ``(provider, status)``
  index; the events table is never read): open orders by provider and status, stuck
  orders by provider, and the age of each provider's oldest open order.

A source that cannot be read leaves its gauges out and reports
``rampwatch_metrics_source_up{source=...} 0``; the scrape still answers 200. The
scrape first flushes its own process's pending counts, so what it shows includes them.

The endpoint reveals business volumes: it needs ``RAMPWATCH_OPS_TOKEN`` as a bearer
token (``receiver.auth``); Prometheus sends it with ``authorization: credentials:``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from config.metrics import COUNTERS, SEPARATOR, key
from orders.models import Order
from orders.states import NON_TERMINAL
from orders.store import Store
from receiver.auth import authenticate
from workers.stream import EventStream

log = logging.getLogger("rampwatch.metrics")

bp = Blueprint("metrics", __name__)

OPEN_STATUSES = sorted(s.value for s in NON_TERMINAL)


class RampwatchCollector(Collector):
    """Reads the counters and computes the gauges on every ``collect`` (see the module docstring)."""

    def __init__(self, redis: Redis, reader: Store, queues: Iterable[Queue], clock: Any = None):
        self.redis = redis
        self.reader = reader
        self.queues = list(queues)
        self.clock = clock or (lambda: datetime.now(UTC))

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "rampwatch_metrics_source_up", "Whether the scrape could read a source", labels=["source"]
        )
        yield from self._from_redis(up)
        yield from self._from_database(up)
        yield up

    def _from_redis(self, up: GaugeMetricFamily) -> Iterator[Metric]:
        names = list(COUNTERS)
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(key(name))
                for queue in self.queues:
                    pipe.llen(queue.key)
                    pipe.zcard(queue.scheduled_job_registry.key)
                    pipe.zcard(queue.failed_job_registry.key)
                answers = pipe.execute()
        except RedisError as exc:
            log.warning("metrics: redis unavailable for the scrape (%s)", type(exc).__name__)
            up.add_metric(["redis"], 0)
            return
        up.add_metric(["redis"], 1)
        for name, values in zip(names, answers, strict=False):
            doc, labels = COUNTERS[name]
            family = CounterMetricFamily(name, doc, labels=list(labels))
            for field, count in sorted(values.items()):
                parts = _text(field).split(SEPARATOR)
                if len(parts) == len(labels):
                    family.add_metric(parts, int(count))
            yield family
        depth = GaugeMetricFamily("rampwatch_queue_depth", "Jobs waiting in each queue", labels=["queue"])
        scheduled = GaugeMetricFamily(
            "rampwatch_queue_scheduled_jobs",
            "Jobs scheduled for later in each queue (retries, deferred polls)",
            labels=["queue"],
        )
        failed = GaugeMetricFamily(
            "rampwatch_failed_jobs", "Jobs in each queue's failed registry", labels=["queue"]
        )
        rest = answers[len(names) :]
        for i, queue in enumerate(self.queues):
            depth.add_metric([queue.name], rest[3 * i])
            scheduled.add_metric([queue.name], rest[3 * i + 1])
            failed.add_metric([queue.name], rest[3 * i + 2])
        yield from (depth, scheduled, failed)
        yield from self._from_stream()

    def _from_stream(self) -> Iterator[Metric]:
        """The callback stream (``workers.stream``): entries waiting, read and not yet
        applied, and dead-lettered."""
        try:
            depths = EventStream(self.redis).depths()
        except RedisError:
            return  # the counters' pipeline has reported Redis already
        gauge = GaugeMetricFamily(
            "rampwatch_callback_stream",
            "Callbacks on the stream: waiting to be read, read and not yet applied, dead-lettered",
            labels=["state"],
        )
        for state, name in (
            ("waiting", "callbacks"),
            ("pending", "callbacks_pending"),
            ("dead", "callbacks_dead"),
        ):
            gauge.add_metric([state], depths[name])
        yield gauge

    def _from_database(self, up: GaugeMetricFamily) -> Iterator[Metric]:
        stmt = (
            select(
                Order.provider,
                Order.status,
                func.count(),
                func.count(Order.stuck_at),
                func.min(Order.created_at),
            )
            .where(Order.status.in_(OPEN_STATUSES))
            .group_by(Order.provider, Order.status)
        )
        try:
            with self.reader.sessions() as session:
                rows = session.execute(stmt).all()
        except SQLAlchemyError as exc:
            log.warning("metrics: database unavailable for the scrape (%s)", type(exc).__name__)
            up.add_metric(["database"], 0)
            return
        up.add_metric(["database"], 1)
        open_ = GaugeMetricFamily(
            "rampwatch_open_orders", "Orders not in a final state", labels=["provider", "status"]
        )
        stuck = GaugeMetricFamily(
            "rampwatch_stuck_orders",
            "Open orders flagged stuck (past their state's time)",
            labels=["provider"],
        )
        oldest = GaugeMetricFamily(
            "rampwatch_oldest_open_order_age_seconds",
            "Age of each provider's oldest open order",
            labels=["provider"],
        )
        now = self.clock()
        per_provider: dict[str, tuple[int, datetime | None]] = {}
        for provider, status, count, stuck_count, created in rows:
            open_.add_metric([provider, status], count)
            held, first = per_provider.get(provider, (0, None))
            if created is not None and created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            per_provider[provider] = (
                held + stuck_count,
                created if first is None or (created is not None and created < first) else first,
            )
        for provider, (stuck_count, first) in sorted(per_provider.items()):
            stuck.add_metric([provider], stuck_count)
            if first is not None:
                oldest.add_metric([provider], max((now - first).total_seconds(), 0.0))
        yield from (open_, stuck, oldest)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def render(redis: Redis, reader: Store, queues: Iterable[Queue]) -> bytes:
    """The Prometheus text exposition of every rampwatch metric."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RampwatchCollector(redis, reader, queues))
    return generate_latest(registry)


@bp.get("/metrics")
def metrics() -> Response:
    authenticate("ops")
    services = current_app.extensions["rampwatch"]
    services.metrics.flush()  # this process's own counts, before reading everyone's
    body = render(services.redis, current_app.extensions["rampwatch.reader"], services.queues.all())
    return Response(body, mimetype=None, content_type=CONTENT_TYPE_LATEST)
