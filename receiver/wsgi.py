"""The WSGI entry for gunicorn: ``gunicorn 'receiver.wsgi:app_from_env()'``."""

from flask import Flask

from config import load_settings
from config.logs import configure_logging
from receiver import create_app


def app_from_env() -> Flask:
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
