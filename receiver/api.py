"""The partner and operator API under ``/api`` (bearer token).

With no ``RAMPWATCH_API_TOKEN`` configured every call is refused (403): the API
is never open by accident. Tokens are compared in constant time.

Order views read through the read-only engine (``orders.db.reading``): they never
wait for a writer's lock. An order id that no order can have (a control
character, a lone surrogate, over 128 characters) is refused with 400 before it
reaches a query or a job; a body is read and parsed with the same bounds as a
callback's (``receiver.body``, ``orders.providers.payload``).
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from orders.errors import InvalidPayload, OrderNotFound, ProviderDisabled
from orders.providers.payload import MAX_ID, parse_json_object, usable_order_id
from orders.service import create_order
from orders.views import order_dict
from receiver.body import read_body
from receiver.errors import Forbidden, Unauthorized, UnsupportedMediaType

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.before_request
def require_token() -> None:
    token = current_app.extensions["rampwatch"].settings.api_token
    if not token:
        raise Forbidden("the API is disabled: RAMPWATCH_API_TOKEN is not set")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("a bearer token is required")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("invalid bearer token")


def _adapter(provider: str) -> Any:
    adapter = current_app.extensions["rampwatch"].adapters.get(provider)
    if adapter is None:
        raise ProviderDisabled(f"provider {provider} is not configured")
    return adapter


def _order_id(external_order_id: str) -> str:
    if not usable_order_id(external_order_id):
        raise InvalidPayload(
            f"an order id is 1 to {MAX_ID} characters, without control characters",
            ["external_order_id"],
        )
    return external_order_id


@bp.get("/orders/<provider>/<external_order_id>")
def show_order(provider: str, external_order_id: str) -> Any:
    reader = current_app.extensions["rampwatch.reader"]
    order = reader.order_view(provider, _order_id(external_order_id))
    if order is None:
        raise OrderNotFound(f"no {provider} order {external_order_id}")
    return jsonify(order_dict(order, raw_bodies=request.args.get("raw") == "1"))


@bp.post("/orders/<provider>")
def create(provider: str) -> Any:
    deps = current_app.extensions["rampwatch"]
    adapter = _adapter(provider)
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("content type must be application/json")
    payload = parse_json_object(read_body(request))
    outcome = create_order(deps.store, adapter, payload)
    order = current_app.extensions["rampwatch.reader"].order_view(provider, outcome.event.external_order_id)
    return jsonify(order_dict(order)), 201


@bp.post("/orders/<provider>/<external_order_id>/reconcile")
def reconcile(provider: str, external_order_id: str) -> Any:
    deps = current_app.extensions["rampwatch"]
    _adapter(provider)
    queued = deps.queues.enqueue_poll(provider, _order_id(external_order_id), reason="api")
    return jsonify({"status": "queued" if queued else "already queued"}), 202
