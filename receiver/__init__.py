"""The HTTP edge: provider callbacks, the partner/ops API, health. Built by ``create_app``."""

from __future__ import annotations

import logging

from flask import Flask
from redis import Redis

from config import Settings
from orders.migrate import Revisions
from orders.providers.base import ProviderAdapter
from orders.store import Store
from receiver import api, errors, health, webhooks
from workers.services import build_services

MAX_BODY = 64 * 1024


def create_app(
    settings: Settings,
    *,
    redis: Redis | None = None,
    store: Store | None = None,
    adapters: dict[str, ProviderAdapter] | None = None,
) -> Flask:
    """Build the WSGI app; collaborators may be passed in (tests), else built from settings.

    ``app.extensions["rampwatch"]`` holds the process's ``Services``;
    ``app.extensions["rampwatch.revisions"]`` what /readyz compares the schema with."""
    app = Flask("rampwatch")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["rampwatch"] = build_services(settings, redis=redis, store=store, adapters=adapters)
    app.extensions["rampwatch.revisions"] = Revisions.load()
    errors.register(app)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    logging.getLogger("rampwatch").setLevel(settings.log_level)
    return app
