"""The WSGI entry for gunicorn: ``gunicorn 'receiver.wsgi:app_from_env()'``.

Building the app from the environment is also where the web process first meets
Redis: a ``rediss://`` certificate that does not verify stops the boot with a
message naming ``REDIS_TLS_VERIFY``; an unreachable Redis does not (webhooks
answer 503 until it is back).
"""

from flask import Flask

from config.logs import configure_logging
from orders.providers import load_settings
from receiver import create_app
from workers.queue import check_tls_at_start


def app_from_env() -> Flask:
    settings = load_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    check_tls_at_start(app.extensions["rampwatch"].redis)
    return app
