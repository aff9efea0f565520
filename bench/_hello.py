"""The baseline of the ingest benchmark: a hello-world Flask app that reads a callback's
body and answers 200, served by the Procfile's gunicorn line (``_stack.start_bare_web``)."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/<provider>")
    def callback(provider: str) -> Any:
        request.get_data()
        return jsonify({"status": "accepted"}), 200

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    return app
