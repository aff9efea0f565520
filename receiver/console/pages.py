"""The console's pages (GET only): orders, stuck orders, one order, failed work, activity.

Lists read through the API's readers (``orders.queries``) with the API's query schema
and cursors (``receiver.schemas``); the order page renders ``orders.views.order_dict``,
the view the API and ``rampwatch orders show`` serve, with raw bodies masked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, current_app, render_template, request
from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from orders import queries
from orders.errors import OrderNotFound
from orders.providers import PROVIDERS
from orders.states import TERMINAL, Status
from orders.views import notification_state, order_dict
from receiver.api.common import order_id, reader
from receiver.console import reads
from receiver.errors import InvalidParameter
from receiver.schemas import ORDER_LIST_QUERY, Cursor, encode_cursor, load_query
from workers.deadletters import sources
from workers.stream import stream_depths

bp = Blueprint("pages", __name__)

PAGE_SIZE = 50
FAILED_NOTIFICATIONS = 50
FILTERS = ("provider", "status", "stuck", "open_longer_than", "has_open_anomalies")
STATUSES = [s.value for s in Status]
OPEN = [s.value for s in Status if s not in TERMINAL]


def _services() -> Any:
    return current_app.extensions["rampwatch"]


@bp.get("/orders")
def orders() -> Any:
    given = MultiDict([(k, v) for k, v in request.args.items(multi=True) if v.strip()])
    query = load_query(ORDER_LIST_QUERY, given)
    filters = queries.OrderFilters(
        provider=query.get("provider"),
        statuses=tuple(query.get("status") or ()),
        open_longer_than=query.get("open_longer_than"),
        stuck=query.get("stuck"),
        has_open_anomalies=query.get("has_open_anomalies"),
    )
    page = queries.orders(reader(), filters, before=query.get("cursor"), limit=PAGE_SIZE)
    form = {name: given.get(name, "") for name in FILTERS}
    following = None
    if page.more:
        following = {**form, "cursor": encode_cursor("orders", page.items[-1].order.id)}
    return render_template(
        "console/orders.html",
        page=page,
        form=form,
        filtered=any(form.values()),
        following=following,
        paged="cursor" in given,
        counts=queries.status_counts(reader(), query.get("provider")),
        providers=sorted(PROVIDERS),
        statuses=STATUSES,
    )


@bp.get("/stuck")
def stuck() -> Any:
    after = _cursor("stuck", request.args.get("cursor"))
    page = queries.stuck_orders(reader(), after=after, limit=PAGE_SIZE)
    following = encode_cursor("stuck", page.items[-1].order.id) if page.more else None
    return render_template(
        "console/stuck.html", page=page, following=following, paged=after is not None, now=_now()
    )


def _cursor(kind: str, value: str | None) -> int | None:
    if not value:
        return None
    try:
        return Cursor(kind).deserialize(value)
    except ValidationError:
        raise InvalidParameter("query parameter cursor: not a cursor of this list", ["cursor"]) from None


@bp.get("/orders/<provider>/<external_order_id>")
def order(provider: str, external_order_id: str) -> Any:
    store = reader()
    found = store.order_view(provider, order_id(external_order_id))
    if found is None:
        raise OrderNotFound(f"no {provider} order {external_order_id}")
    view = order_dict(found, raw_bodies=True, notifications=queries.order_notifications(store, found.id))
    for event in view["timeline"]:
        event["raw_body"] = reads.masked_body(event["raw_body"] or "")
    return render_template(
        "console/order.html",
        order=view,
        is_open=view["status"] in OPEN,
        notify=bool(_services().settings.notify_url),
    )


@bp.get("/failed")
def failed() -> Any:
    letters = []
    for source in sources(_services().redis):
        letters.append((source.name, source.list()))
    page = queries.notifications(
        reader(), queries.NotificationFilters(failed=True), before=None, limit=FAILED_NOTIFICATIONS
    )
    notes = [
        {
            "provider": r.provider,
            "external_order_id": r.external_order_id,
            **notification_state(r.notification),
        }
        for r in page.items
    ]
    return render_template(
        "console/failed.html",
        letters=letters,
        dead_total=sum(len(items) for _, items in letters),
        notifications=notes,
        more_notifications=page.more,
        notify=bool(_services().settings.notify_url),
    )


@bp.get("/activity")
def activity() -> Any:
    redis = _services().redis
    seen = queries.activity(reader(), _now())
    return render_template(
        "console/activity.html",
        activity=seen,
        chart=_chart(seen),
        queues=reads.queue_depths(redis),
        stream=stream_depths(redis),
    )


def _now() -> datetime:
    return datetime.now(UTC)


# The chart: an inline SVG drawn here (no script, no library), one polyline per series.
CHART_W, CHART_H, PAD_L, PAD_B, PAD_T = 720, 220, 44, 28, 12
COLOURS = {"callbacks": "#1f6feb", "transitions": "#b35900", "polls": "#2a7d2e"}
DASHES = {"callbacks": "", "transitions": "6 3", "polls": "2 3"}


def _chart(seen: queries.Activity) -> dict[str, Any]:
    peak = max(seen.peak, 1)
    n = len(seen.minutes)
    width, height = CHART_W - PAD_L - 8, CHART_H - PAD_B - PAD_T

    def x(i: int) -> float:
        return round(PAD_L + (width * i / max(n - 1, 1)), 1)

    def y(v: int) -> float:
        return round(PAD_T + height - height * v / peak, 1)

    lines = [
        {
            "name": name,
            "colour": COLOURS[name],
            "dash": DASHES[name],
            "points": " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(counts)),
        }
        for name, counts in seen.series.items()
    ]
    ticks = [{"x": x(i), "label": seen.minutes[i].strftime("%H:%M")} for i in range(0, n, 10)]
    grid = [{"y": y(v), "label": v} for v in sorted({0, peak // 2, peak})]
    return {
        "width": CHART_W,
        "height": CHART_H,
        "lines": lines,
        "ticks": ticks,
        "grid": grid,
        "left": PAD_L,
        "right": CHART_W - 8,
        "bottom": CHART_H - PAD_B,
    }
