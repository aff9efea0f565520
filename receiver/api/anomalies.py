"""Anomalies (operator): list them, resolve one with a comment."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from orders import queries
from orders.providers.payload import parse_json_object
from orders.views import anomaly_dict
from receiver.api.common import reader, writer
from receiver.auth import requires
from receiver.body import read_body
from receiver.errors import UnsupportedMediaType
from receiver.schemas import ANOMALY_LIST_QUERY, RESOLVE_BODY, encode_cursor, load_body, load_query

bp = Blueprint("anomalies", __name__)

RESOLVED = {"open": False, "resolved": True, "all": None}


@bp.get("/anomalies")
@requires("ops")
def listing() -> Any:
    query = load_query(ANOMALY_LIST_QUERY, request.args)
    filters = queries.AnomalyFilters(
        resolved=RESOLVED[query["state"]], kind=query.get("kind"), provider=query.get("provider")
    )
    page = queries.anomalies(reader(), filters, before=query.get("cursor"), limit=query["limit"])
    return jsonify(
        {
            "anomalies": [anomaly_dict(r.anomaly, r.provider, r.external_order_id) for r in page.items],
            "next": encode_cursor("anomalies", page.items[-1].anomaly.id) if page.more else None,
        }
    )


@bp.post("/anomalies/<int:anomaly_id>/resolve")
@requires("ops")
def resolve(anomaly_id: int) -> Any:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("content type must be application/json")
    body = load_body(RESOLVE_BODY, parse_json_object(read_body(request)))
    anomaly, provider, external_order_id = writer().resolve_anomaly(anomaly_id, body["comment"].strip())
    return jsonify(anomaly_dict(anomaly, provider, external_order_id))
