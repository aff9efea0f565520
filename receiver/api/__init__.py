"""The partner and operator API under ``/api``, one blueprint of a few small ones.

* ``orders``: create (idempotent), show, list, reconcile (``receiver.api.reconcile``);
* ``anomalies``: list and resolve (operator);
* ``events``: the outbox feed a partner catches up from;
* ``/api/openapi.json``: the spec of all of it (``receiver.openapi``), without a token.

Every view names the token it needs (``receiver.auth.requires``). Views read
through the read-only engine (``app.extensions["rampwatch.reader"]``) and write
through the store of the process's Services.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from receiver.api import anomalies, events, orders, reconcile

bp = Blueprint("api", __name__, url_prefix="/api")
for child in (orders.bp, reconcile.bp, anomalies.bp, events.bp):
    bp.register_blueprint(child)


@bp.get("/openapi.json")
def openapi() -> Any:
    """Public: the spec holds no data, and a partner's tooling may fetch it unauthenticated."""
    return jsonify(current_app.extensions["rampwatch.openapi"])
