"""``rampwatch notifications``: the outbox's delivery state, and redelivering one."""

from __future__ import annotations

import click

from workers.cli.common import (
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
def notifications() -> None:
    """The partner's notifications (the outbox): list them, redeliver a failed one."""


@notifications.command("list")
@click.option("--failed", is_flag=True, help="Only undelivered ones that failed an attempt or are dead.")
@click.option(
    "--order",
    "order",
    nargs=2,
    type=(provider_choice(), str),
    metavar="PROVIDER ID",
    help="Only this order's.",
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
@pass_runtime
def list_notifications(
    rt: Runtime, failed: bool, order: tuple[str, str] | None, limit: int, as_json: bool
) -> None:
    """Notifications, newest first: order, kind, version, attempts, state, last error."""
    from orders import queries
    from orders.views import notification_state

    provider, external_id = order if order else (None, None)
    filters = queries.NotificationFilters(failed=failed, provider=provider, external_order_id=external_id)
    page = queries.notifications(rt.reader(), filters, before=None, limit=limit)
    views = [
        {
            "provider": r.provider,
            "external_order_id": r.external_order_id,
            **notification_state(r.notification),
        }
        for r in page.items
    ]
    if as_json:
        emit_json({"notifications": views, "more": page.more})
        return
    if not views:
        say("no notifications match")
        return
    rows = [
        (
            v["id"],
            v["provider"],
            v["external_order_id"],
            v["kind"],
            v["version"],
            v["attempts"],
            v["state"],
            v["delivered_at"] or v["dead_at"] or v["next_attempt_at"],
            v["last_error"],
        )
        for v in views
    ]
    headers = ("id", "provider", "order", "kind", "v", "attempts", "state", "at", "last error")
    click.echo(table(headers, rows))
    if page.more:
        say(f"(the newest {limit} shown; more match: raise --limit)")


@notifications.command("redeliver")
@click.argument("notification_id", type=click.IntRange(min=1))
@json_option
@pass_runtime
def redeliver(rt: Runtime, notification_id: int, as_json: bool) -> None:
    """Send a dead or failing notification again now, and queue its order's delivery.

    The order's notifications still go out in version order: this one goes before
    any later pending one of its order."""
    from orders.views import notification_state

    services = rt.services()
    note = checked(lambda: services.store.redeliver_notification(notification_id))
    if note is None:
        raise Failure(f"no notification {notification_id}")
    queued = False
    if services.settings.notify_url:
        queued = services.queues.enqueue_delivery(note.order_id)
    if as_json:
        emit_json({**notification_state(note), "delivery_queued": queued})
        return
    if not services.settings.notify_url:
        click.echo(f"notification {notification_id} is due again; NOTIFY_URL is not set, so nothing sends it")
        return
    click.echo(
        f"notification {notification_id} ({note.kind} v{note.version}) is due again; "
        f"delivery of its order {'queued' if queued else 'already queued'}"
    )
