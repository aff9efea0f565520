"""Orders: create (idempotent), show, list.

Creation goes through ``orders.service.create_order``, which calls the provider at
most once per order: a first request answers 201, a repeat (same
``Idempotency-Key``, or the same order id without a key) 200 with the order as it
stands, ``Idempotent-Replayed: true`` and no provider call; a different request
under the same key or order id, or a repeat while the first still waits for the
provider, 409 (``receiver.errors``).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from redis.exceptions import RedisError

from orders import queries
from orders.errors import OrderNotFound
from orders.providers.payload import parse_json_object
from orders.service import create_order
from orders.store import Outcome
from orders.views import order_dict, order_summary
from receiver.api.common import adapter_for, order_id, reader, writer
from receiver.auth import require_ops_for, requires
from receiver.body import read_body
from receiver.errors import UnsupportedMediaType
from receiver.schemas import (
    CREATE_HEADERS,
    ORDER_LIST_QUERY,
    SHOW_ORDER_QUERY,
    encode_cursor,
    load_headers,
    load_query,
)

bp = Blueprint("orders", __name__)
log = logging.getLogger("rampwatch.api")

REPLAYED = "Idempotent-Replayed"


@bp.get("/orders/<provider>/<external_order_id>")
@requires("partner")
def show(provider: str, external_order_id: str) -> Any:
    query = load_query(SHOW_ORDER_QUERY, request.args)
    if query["raw"]:
        require_ops_for("raw bodies (?raw=1, personal data)")
    order = reader().order_view(provider, order_id(external_order_id))
    if order is None:
        raise OrderNotFound(f"no {provider} order {external_order_id}")
    return jsonify(order_dict(order, raw_bodies=query["raw"]))


@bp.post("/orders/<provider>")
@requires("partner")
def create(provider: str) -> Any:
    adapter = adapter_for(provider)
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("content type must be application/json")
    key = load_headers(CREATE_HEADERS, request.headers).get("idempotency_key")
    payload = parse_json_object(read_body(request))
    outcome = create_order(writer(), adapter, payload, idempotency_key=key, on_change=_deliver)
    order = reader().order_view(provider, outcome.event.external_order_id)
    resp = jsonify(order_dict(order))
    resp.status_code = 200 if outcome.replayed else 201
    resp.headers[REPLAYED] = "true" if outcome.replayed else "false"
    return resp


def _deliver(outcome: Outcome) -> None:
    """A creation changed the order (its answer, a refusal): its notification goes out now."""
    try:
        current_app.extensions["rampwatch"].deliver_change(outcome)
    except RedisError as exc:  # the sweep delivers it a little later
        log.warning("could not queue the delivery of a creation's notification: %s", type(exc).__name__)


@bp.get("/orders")
@requires("partner")
def listing() -> Any:
    query = load_query(ORDER_LIST_QUERY, request.args)
    filters = queries.OrderFilters(
        provider=query.get("provider"),
        statuses=tuple(query.get("status") or ()),
        updated_since=query.get("updated_since"),
        open_longer_than=query.get("open_longer_than"),
        stuck=query.get("stuck"),
        has_open_anomalies=query.get("has_open_anomalies"),
    )
    page = queries.orders(reader(), filters, before=query.get("cursor"), limit=query["limit"])
    return jsonify(
        {
            "orders": [order_summary(row.order, row.open_anomalies) for row in page.items],
            "next": encode_cursor("orders", page.items[-1].order.id) if page.more else None,
        }
    )
