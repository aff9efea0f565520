"""``rampwatch orders``: list orders, show one with its timeline, create one."""

from __future__ import annotations

import json
from datetime import datetime

import click

from orders.states import Status
from workers.cli.common import (
    WHEN,
    Failure,
    Runtime,
    checked,
    emit_json,
    json_option,
    pass_runtime,
    provider_choice,
    say,
    table,
)


@click.group()
def orders() -> None:
    """List, inspect and create orders."""


@orders.command("list")
@click.option("--provider", type=provider_choice(), help="Only this provider's orders.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in Status], case_sensitive=False),
    help="Only orders in this canonical status (repeatable).",
)
@click.option("--stuck", is_flag=True, help="Only orders flagged stuck (past their state's expected time).")
@click.option("--since", type=WHEN, help="Only orders updated since (ISO date/time, or an age: 6h, 2d).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
@pass_runtime
def list_orders(
    rt: Runtime,
    provider: str | None,
    statuses: tuple[str, ...],
    stuck: bool,
    since: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """Orders, newest first, with their open anomalies counted."""
    from orders import queries
    from orders.views import order_summary

    filters = queries.OrderFilters(
        provider=provider,
        statuses=tuple(s.upper() for s in statuses),
        updated_since=since,
        stuck=True if stuck else None,
    )
    page = queries.orders(rt.reader(), filters, before=None, limit=limit)
    if as_json:
        emit_json(
            {"orders": [order_summary(r.order, r.open_anomalies) for r in page.items], "more": page.more}
        )
        return
    rows = [
        (
            r.order.provider,
            r.order.external_order_id,
            r.order.status,
            r.order.provider_status,
            r.order.version,
            r.order.updated_at,
            r.open_anomalies or "",
            r.order.stuck_reason if r.order.stuck_at else "",
        )
        for r in page.items
    ]
    if not rows:
        say("no orders match")
        return
    headers = ("provider", "order", "status", "provider status", "v", "updated", "anomalies", "stuck")
    click.echo(table(headers, rows))
    if page.more:
        say(f"(the newest {limit} shown; more match: raise --limit or narrow the filters)")


@orders.command("show")
@click.argument("provider", type=provider_choice())
@click.argument("external_order_id")
@click.option("--raw", is_flag=True, help="Include the raw bodies received (personal data!).")
@json_option
@pass_runtime
def show(rt: Runtime, provider: str, external_order_id: str, raw: bool, as_json: bool) -> None:
    """An order and its timeline: callbacks (and the key that verified each), claims,
    polls with their fetch time, transitions and their source, anomalies, its
    notifications and their delivery, and whether it is stuck and why."""
    from orders import queries
    from orders.views import order_dict, timeline_text

    store = rt.reader()
    order = store.order_view(provider, external_order_id)
    if order is None:
        raise Failure(f"no {provider} order {external_order_id}")
    view = order_dict(order, raw_bodies=raw, notifications=queries.order_notifications(store, order.id))
    if as_json:
        emit_json(view)
    else:
        click.echo(timeline_text(view))


@orders.command("create")
@click.argument("provider", type=provider_choice())
@click.argument("request")
@click.option("--idempotency-key", help="Repeats with this key replay the first creation instead.")
@json_option
@pass_runtime
def create(rt: Runtime, provider: str, request: str, idempotency_key: str | None, as_json: bool) -> None:
    """Create an order at PROVIDER from REQUEST (the create request as JSON)."""
    from orders.service import create_order

    try:
        body = json.loads(request)
    except ValueError:
        raise Failure("the request is not JSON", code=2) from None
    if not isinstance(body, dict):
        raise Failure("the request is not a JSON object", code=2)
    services = rt.services()
    adapter = checked(lambda: services.adapter(provider))

    outcome = checked(
        lambda: create_order(
            services.store, adapter, body, idempotency_key=idempotency_key, on_change=services.deliver_change
        )
    )
    order_id = outcome.event.external_order_id
    if as_json:
        emit_json(
            {
                "provider": provider,
                "external_order_id": order_id,
                "status": outcome.status.value,
                "version": outcome.version,
                "replayed": outcome.replayed,
            }
        )
        return
    replayed = " (replayed: created before)" if outcome.replayed else ""
    click.echo(f"{provider} {order_id}: {outcome.status.value} (v{outcome.version}){replayed}")
