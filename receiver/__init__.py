"""The HTTP edge: provider callbacks, the partner/ops API, health. Built by ``create_app``.

The web tier never waits on the database for long: its engine bounds every wait
(``WEB_DATABASE_WAIT``, well below gunicorn's 30 s timeout, ``receiver/gunicorn_conf.py``),
reads go through the read-only engine (no write lock), and a wait that runs out
is a 503 with ``Retry-After``. Webhooks need no database at all.

Every request has an id for its log lines (``receiver.ids``): the ``X-Request-ID`` it
came with when that is a sane token (Heroku's router sets one), else a new one; the
answer echoes it in ``X-Request-ID``. Provider callbacks are answered by a plain WSGI
endpoint in front of Flask (``receiver.webhooks``), the hot path; Flask serves the rest. ``/metrics`` (``receiver.metrics``) serves Prometheus text to the
operator's token. With ``SENTRY_DSN`` set, errors go to Sentry (``config.errors``).
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request
from redis import Redis
from werkzeug.middleware.proxy_fix import ProxyFix

from config import Settings
from config.errors import init_error_reporting
from config.logs import enter_context, exit_context
from orders.db import make_engine, reading
from orders.migrate import Revisions
from orders.providers import STATUS_MAPS, poll_policies
from orders.providers.base import ProviderAdapter
from orders.store import Store
from receiver import api, console, errors, health, metrics, openapi, webhooks
from receiver.api.reconcile import RECONCILE_WAIT
from receiver.body import MAX_BODY
from receiver.ids import REQUEST_ID_HEADER, request_id
from receiver.limits import UnverifiedLimiter
from workers.services import build_services

__all__ = ["MAX_BODY", "RECONCILE_WAIT", "WEB_DATABASE_WAIT", "create_app"]

WEB_DATABASE_WAIT = 3.0  # seconds: the longest a request waits on the database


def create_app(
    settings: Settings,
    *,
    redis: Redis | None = None,
    store: Store | None = None,
    adapters: dict[str, ProviderAdapter] | None = None,
    database_wait: float = WEB_DATABASE_WAIT,
    reconcile_wait: float = RECONCILE_WAIT,
) -> Flask:
    """Build the WSGI app; collaborators may be passed in (tests), else built from settings.

    ``app.extensions["rampwatch"]`` holds the process's ``Services`` (its store's
    engine bounded by ``database_wait`` unless a store is passed in);
    ``app.extensions["rampwatch.reader"]`` the same store read through the read-only
    engine; ``app.extensions["rampwatch.revisions"]`` what /readyz compares the
    schema with; ``app.extensions["rampwatch.limiter"]`` the budget of refused callbacks;
    ``app.extensions["rampwatch.openapi"]`` the spec ``/api/openapi.json`` serves;
    ``reconcile_wait`` bounds ``/reconcile?wait=1``."""
    app = Flask("rampwatch")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # "//" in a path is a 404 like any other unknown path, not werkzeug's HTML redirect.
    app.url_map.merge_slashes = False
    if store is None:
        engine = make_engine(settings.database_url, wait=database_wait)
        store = Store(engine, STATUS_MAPS, poll_policies(settings))
    services = build_services(settings, redis=redis, store=store, adapters=adapters)
    app.extensions["rampwatch"] = services
    app.extensions["rampwatch.reader"] = Store(reading(store.engine), STATUS_MAPS, poll_policies(settings))
    app.extensions["rampwatch.revisions"] = Revisions.load()
    limiter = UnverifiedLimiter(services.redis, settings.unverified_limit, settings.unverified_window)
    app.extensions["rampwatch.limiter"] = limiter
    # Callbacks are answered before Flask (``receiver.webhooks``); within ProxyFix, so that
    # their client address is the one the proxies saw.
    app.wsgi_app = webhooks.CallbackEndpoint(services, limiter, app.wsgi_app)  # type: ignore[method-assign]
    if settings.trusted_proxies:
        # The client address as the proxies in front of us saw it, and nothing a client wrote.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    errors.register(app)
    _request_ids(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(console.bp)  # /console: HTML, its own cookie and CSRF checks
    app.extensions["rampwatch.reconcile_wait"] = reconcile_wait
    app.extensions["rampwatch.openapi"] = openapi.build_spec(app)
    logging.getLogger("rampwatch").setLevel(settings.log_level)
    init_error_reporting(settings, "web")
    return app


def _request_ids(app: Flask) -> None:
    """Bind each request's id to its log lines and echo it in the answer."""

    @app.before_request
    def _bind() -> None:
        g.request_id = request_id(request.headers.get(REQUEST_ID_HEADER))
        g.log_token = enter_context(request_id=g.request_id)

    @app.after_request
    def _echo(response: Response) -> Response:
        if "request_id" in g:
            response.headers[REQUEST_ID_HEADER] = g.request_id
        return response

    @app.teardown_request
    def _unbind(_exc: BaseException | None) -> None:
        token = g.pop("log_token", None)
        if token is not None:
            try:
                exit_context(token)
            except ValueError:  # created in another context (a copied one): nothing to undo here
                pass
