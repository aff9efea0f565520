"""The events feed: the partner notifications of the outbox, in the order they
committed, from a cursor. A partner that missed pushes catches up here: it keeps
the ``next`` it was given and asks again with ``?after=<next>``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from orders import queries
from orders.views import notification_event
from receiver.api.common import reader
from receiver.auth import requires
from receiver.schemas import EVENTS_QUERY, encode_cursor, load_query

bp = Blueprint("events", __name__)


@bp.get("/events")
@requires("partner")
def feed() -> Any:
    query = load_query(EVENTS_QUERY, request.args)
    after = query.get("after") or 0
    page = queries.events_after(reader(), after, query["limit"])
    events = [{"id": encode_cursor("events", n.id), **notification_event(n)} for n in page.items]
    last = page.items[-1].id if page.items else after
    return jsonify({"events": events, "next": encode_cursor("events", last)})
