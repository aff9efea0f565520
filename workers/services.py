"""The collaborators of a process, built by one function for the web app, the workers and the CLI.

``build_services(settings)`` makes the Redis client, the order store, the
adapters of the enabled providers, the queues and the callback stream, once per process; the web
app keeps them on the Flask app, a worker installs them (``Services.install``)
so that jobs, which RQ calls by name with JSON arguments only, read them with
``current()``. Tests pass their own collaborators in. Nothing is built at
import time. ``metrics`` counts in memory for the process (``config.metrics``); the
process's entry point starts its flushing thread (``Metrics.start``), so tests that build
Services flush when they choose. A worker's Redis client waits out outages (``patience``, see
``workers.outages``); the web's gives up at once so that a webhook answers 503.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from redis import Redis

from config import Settings
from config.metrics import Metrics
from orders.db import make_engine
from orders.errors import ProviderDisabled
from orders.providers import STATUS_MAPS, build_adapters, poll_policies
from orders.providers.base import ProviderAdapter
from orders.store import Outcome, Store
from workers.outages import DatabaseWatch, Patience, connect_patient
from workers.pooling import pooled_session
from workers.queue import Queues, connect
from workers.stream import EventStream

_CURRENT: contextvars.ContextVar[Services] = contextvars.ContextVar("rampwatch_services")

WEB_REDIS_TIMEOUT = 2.0  # a webhook answers 503 promptly when Redis is down
WORKER_REDIS_TIMEOUT = 10.0  # workers block on dequeue; RQ sets its own read timeouts there


class NoServices(RuntimeError):
    """A job ran in a process that did not install its Services."""


@dataclass
class Services:
    settings: Settings
    redis: Redis
    store: Store
    adapters: dict[str, ProviderAdapter]
    queues: Queues
    database_watch: DatabaseWatch = field(default_factory=DatabaseWatch)
    metrics: Metrics = field(default=None)  # type: ignore[assignment]  # set in __post_init__
    stream: EventStream = field(default=None)  # type: ignore[assignment]  # set in __post_init__

    def __post_init__(self) -> None:
        if self.stream is None:
            self.stream = EventStream(self.redis)
        if self.metrics is None:
            self.metrics = Metrics(self.redis)
        # Whatever applies through this store (a job, the API's creation, the CLI) is counted.
        self.store.observers["metrics"] = functools.partial(count_outcomes, self.metrics)

    def install(self) -> contextvars.Token[Services]:
        """Make these the services ``current()`` returns in this context (a worker, the CLI)."""
        return _CURRENT.set(self)

    def deliver_change(self, outcome: Outcome) -> None:
        """After ``outcome`` changed an order: queue the delivery of the notification it wrote,
        when notifications are pushed (the sweep would queue it too, a little later)."""
        self.deliver_changes([outcome])

    def deliver_changes(self, outcomes: Iterable[Outcome]) -> None:
        """``deliver_change`` for a batch of outcomes: one delivery job for every order the
        batch changed (``Queues.enqueue_deliveries``; the order's own job for one)."""
        if self.settings.notify_url:
            self.queues.enqueue_deliveries(
                [o.order_id for o in outcomes if o.changed and o.order_id is not None]
            )

    def adapter(self, provider: str) -> ProviderAdapter:
        try:
            return self.adapters[provider]
        except KeyError:
            raise ProviderDisabled(f"provider {provider} is not configured") from None

    def close(self) -> None:
        self.metrics.stop()
        self.store.engine.dispose()
        self.redis.close()


def count_outcomes(metrics: Metrics, outcomes: Sequence[Outcome]) -> None:
    """What a committed batch did, for ``/metrics``: events by decision, transitions, anomalies."""
    for outcome in outcomes:
        event = outcome.event
        metrics.inc(
            "rampwatch_events", provider=event.provider, source=event.source, decision=outcome.decision.value
        )
        if outcome.changed:
            metrics.inc("rampwatch_transitions", provider=event.provider, to_status=outcome.status.value)
        for kind in outcome.anomalies:
            metrics.inc("rampwatch_anomalies", provider=event.provider, kind=kind)


def build_services(
    settings: Settings,
    *,
    redis: Redis | None = None,
    store: Store | None = None,
    adapters: dict[str, ProviderAdapter] | None = None,
    redis_timeout: float = WEB_REDIS_TIMEOUT,
    patience: Patience | None = None,
) -> Services:
    """Every collaborator from ``settings``; any of them may be passed in instead. With
    ``patience`` (workers), the Redis client waits out outages instead of failing."""
    if redis is None and patience is not None:
        redis = connect_patient(
            settings.redis_url, patience, timeout=redis_timeout, tls_verify=settings.redis_tls_verify
        )
    redis = redis or connect(settings.redis_url, timeout=redis_timeout, tls_verify=settings.redis_tls_verify)
    store = store or Store(make_engine(settings.database_url), STATUS_MAPS, poll_policies(settings))
    if adapters is None:
        # One pooled keep-alive session per process, at most RAMPWATCH_POLL_CONCURRENCY
        # requests in flight per provider (workers.pooling).
        adapters = build_adapters(settings, pooled_session(settings.poll_concurrency))
    return Services(settings, redis, store, adapters, Queues(redis))


def current() -> Services:
    try:
        return _CURRENT.get()
    except LookupError:
        raise NoServices("no rampwatch Services are installed in this process") from None
