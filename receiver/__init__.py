"""The HTTP edge: provider callbacks, the partner/ops API, health. Built by ``create_app``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask
from redis import Redis

from config import Settings
from orders.db import make_engine
from orders.migrate import Revisions
from orders.providers import STATUS_MAPS, build_adapters, poll_policies
from orders.providers.base import ProviderAdapter
from orders.store import Store
from receiver import api, errors, health, webhooks
from workers.queue import Queues, connect

MAX_BODY = 64 * 1024


@dataclass
class Deps:
    settings: Settings
    redis: Redis
    store: Store
    adapters: dict[str, ProviderAdapter]
    queues: Queues
    # What /readyz compares the database's schema with, read once per app.
    revisions: Revisions


def create_app(
    settings: Settings,
    *,
    redis: Redis | None = None,
    store: Store | None = None,
    adapters: dict[str, ProviderAdapter] | None = None,
) -> Flask:
    """Build the WSGI app; collaborators may be passed in (tests), else built from settings."""
    app = Flask("rampwatch")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False  # type: ignore[attr-defined]
    redis = redis or connect(settings.redis_url, tls_verify=settings.redis_tls_verify)
    store = store or Store(make_engine(settings.database_url), STATUS_MAPS, poll_policies(settings))
    adapters = build_adapters(settings) if adapters is None else adapters
    app.extensions["rampwatch"] = Deps(settings, redis, store, adapters, Queues(redis), Revisions.load())
    errors.register(app)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    logging.getLogger("rampwatch").setLevel(settings.log_level)
    return app
