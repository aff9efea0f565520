"""A process's collaborators, built once and handed to the jobs it runs.

RQ calls jobs by name with JSON arguments only, so a job cannot receive its
collaborators as parameters. The worker (or a test, or the CLI) builds one
``Runtime`` from the settings and installs it with ``Runtime.install``; jobs read
it with ``current()``. Nothing is built at import time.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

import requests
from redis import Redis

from config import Settings
from orders.db import make_engine
from orders.providers import STATUS_MAPS, build_adapters, poll_policies
from orders.providers.base import ProviderAdapter
from orders.store import Store
from workers.queue import Queues, connect

_CURRENT: contextvars.ContextVar[Runtime] = contextvars.ContextVar("rampwatch_runtime")


class NoRuntime(RuntimeError):
    """A job ran in a process that did not install a Runtime."""


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    store: Store
    adapters: dict[str, ProviderAdapter]
    queues: Queues

    @classmethod
    def build(cls, settings: Settings, redis: Redis | None = None) -> Runtime:
        # Worker connections block on dequeue (BLPOP): RQ sets its own read timeouts there.
        redis = redis or connect(settings.redis_url, timeout=10, tls_verify=settings.redis_tls_verify)
        store = Store(make_engine(settings.database_url), STATUS_MAPS, poll_policies(settings))
        session = requests.Session()
        return cls(settings, redis, store, build_adapters(settings, session), Queues(redis))

    def install(self) -> contextvars.Token[Runtime]:
        return _CURRENT.set(self)

    def adapter(self, provider: str) -> ProviderAdapter:
        from orders.errors import ProviderDisabled

        try:
            return self.adapters[provider]
        except KeyError:
            raise ProviderDisabled(f"provider {provider} is not configured") from None

    def close(self) -> None:
        self.store.engine.dispose()
        self.redis.close()


def current() -> Runtime:
    try:
        return _CURRENT.get()
    except LookupError:
        raise NoRuntime("no rampwatch Runtime is installed in this process") from None
