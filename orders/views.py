"""Plain-data views for the API and the CLI (one shape for both): an order with its
timeline, an order's summary (lists), an anomaly, an outbox notification (the events
feed, and its delivery state for operators); ``timeline_text`` renders an order for
``rampwatch orders show``. Raw bodies (personal data) appear only when asked for."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from orders.models import Anomaly, Notification, Order


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def order_dict(
    order: Order, *, raw_bodies: bool = False, notifications: Sequence[Notification] | None = None
) -> dict[str, Any]:
    """The order, its anomalies and its event timeline (raw bodies on request only:
    they hold the provider's personal data), and, when given, its outbox
    ``notifications`` with their delivery state.

    The order's own fields hold only what a signature or a verified answer covered.
    An unsigned claim appears on its event as ``claimed_status``, never as state."""
    timeline = []
    for ev in order.events:
        item = {
            "id": ev.id,
            "source": ev.source,
            "provider_status": ev.provider_status,
            "canonical_status": ev.canonical_status,
            "decision": ev.decision,
            "from": ev.from_status,
            "to": ev.to_status,
            "version": ev.version_after,
            "verified_by": ev.verified_by,
            "covers": ev.covers.split(",") if ev.covers else [],
            "claimed_status": ev.claimed_status,
            "fiat_amount": ev.fiat_amount,
            "received_at": _iso(ev.received_at),
            "observed_at": _iso(ev.observed_at or ev.received_at),
            "recorded_at": _iso(ev.recorded_at),
            "seen": ev.seen_count,
            "last_seen_at": _iso(ev.last_seen_at),
        }
        if raw_bodies:
            item["raw_body"] = ev.raw_body
        timeline.append(item)
    view = {
        **order_head(order),
        "details": dict(order.details or {}),
        "next_poll_at": _iso(order.next_poll_at),
        "stuck_at": _iso(order.stuck_at),
        "stuck_reason": order.stuck_reason,
        "anomalies": [_anomaly(a) for a in order.anomalies],
        "timeline": timeline,
    }
    if notifications is not None:
        view["notifications"] = [notification_state(n) for n in notifications]
    return view


def _anomaly(a: Anomaly) -> dict[str, Any]:
    return {
        "id": a.id,
        "kind": a.kind,
        "detail": json.loads(a.detail),
        "event_id": a.event_id,
        "created_at": _iso(a.created_at),
        "resolved_at": _iso(a.resolved_at),
        "resolution": a.resolution,
    }


def anomaly_dict(anomaly: Anomaly, provider: str, external_order_id: str) -> dict[str, Any]:
    """An anomaly with the order it is about (the anomalies list)."""
    return {**_anomaly(anomaly), "provider": provider, "external_order_id": external_order_id}


def order_head(order: Order) -> dict[str, Any]:
    """Where an order stands: what every view of it starts with (the order view, a list's
    row, a notification's data). Only what a signature or a verified answer covered."""
    return {
        "provider": order.provider,
        "external_order_id": order.external_order_id,
        "provider_order_id": order.provider_order_id,
        "kind": order.kind,
        "status": order.status,
        "provider_status": order.provider_status,
        "version": order.version,
        "amounts": {
            "fiat_amount": order.fiat_amount,
            "fiat_currency": order.fiat_currency,
            "crypto_amount": order.crypto_amount,
            "crypto_currency": order.crypto_currency,
        },
        "created_at": _iso(order.created_at),
        "updated_at": _iso(order.updated_at),
        "terminal_at": _iso(order.terminal_at),
    }


def order_summary(order: Order, open_anomalies: int) -> dict[str, Any]:
    """An order without its timeline (lists): where it stands and since when."""
    return {
        **order_head(order),
        "stuck_at": _iso(order.stuck_at),
        "stuck_reason": order.stuck_reason,
        "open_anomalies": open_anomalies,
    }


def notification_event(notification: Notification) -> dict[str, Any]:
    """An outbox row as the events feed serves it: its envelope's type, timestamp and
    data (``webhook_id`` is the id its push delivery carries)."""
    try:
        envelope = json.loads(notification.body)
    except ValueError:
        envelope = None
    if not isinstance(envelope, dict):
        envelope = {}
    return {
        "webhook_id": f"msg_{notification.id}",
        "type": envelope.get("type", notification.kind),
        "timestamp": envelope.get("timestamp", _iso(notification.created_at)),
        "data": envelope.get("data"),
    }


def notification_state(notification: Notification) -> dict[str, Any]:
    """An outbox row's delivery state, for operators (never its body: the events feed
    serves that): attempts, delivered or dead, the last error, the next attempt."""
    n = notification
    if n.delivered_at is not None:
        state = "delivered"
    elif n.dead_at is not None:
        state = "dead"
    elif n.last_error is not None:
        state = "retrying"
    else:
        state = "pending"
    return {
        "id": n.id,
        "webhook_id": f"msg_{n.id}",
        "kind": n.kind,
        "version": n.version,
        "state": state,
        "attempts": n.attempts,
        "created_at": _iso(n.created_at),
        "next_attempt_at": _iso(n.next_attempt_at),
        "delivered_at": _iso(n.delivered_at),
        "dead_at": _iso(n.dead_at),
        "last_error": n.last_error,
    }


def timeline_text(view: dict[str, Any]) -> str:
    """A human timeline for ``rampwatch orders show``: where the order stands (and
    whether it is stuck, and why), its anomalies, every event with its source,
    decision, the key that verified it, an answer's fetch time, any claim; raw bodies
    when the view holds them (``--raw``); its notifications and their delivery."""
    lines = [
        f"{view['provider']} {view['external_order_id']}: {view['status']} "
        f"(provider {view['provider_status'] or '-'}, version {view['version']})",
        f"  fiat {view['amounts']['fiat_amount'] or '-'} {view['amounts']['fiat_currency'] or ''}".rstrip(),
        f"  created {view['created_at']}  next poll {view['next_poll_at'] or '-'}",
    ]
    if view.get("stuck_at"):
        lines.append(f"  STUCK since {view['stuck_at']}: {view.get('stuck_reason') or '-'}")
    for a in view["anomalies"]:
        resolved = f"  (resolved {a['resolved_at']}: {a['resolution']})" if a.get("resolved_at") else ""
        lines.append(f"  ANOMALY #{a['id']} {a['kind']}: {json.dumps(a['detail'], sort_keys=True)}{resolved}")
    lines.append("  timeline:")
    for ev in view["timeline"]:
        what = ev["provider_status"] or (
            f"claimed: {ev['claimed_status']}" if ev["claimed_status"] else "(none)"
        )
        if ev["provider_status"] and ev["claimed_status"]:
            what += f" (claimed: {ev['claimed_status']})"
        lines.append(
            f"    {ev['recorded_at']}  {ev['source']:<8} {what:<26} "
            f"{ev['decision']:<14} {ev['from']} -> {ev['to']}  v{ev['version']}"
            + (f"  [{ev['verified_by']}]" if ev["verified_by"] else "")
            + (
                f"  fetched {ev['observed_at']}"
                if ev["source"] == "poll" or (ev["verified_by"] and ev["source"] == "create")
                else ""
            )
            + (f"  seen {ev['seen']}x, last {ev['last_seen_at']}" if ev["seen"] > 1 else "")
            + f"  #{ev['id']}"
        )
        if "raw_body" in ev:
            lines.append(f"        raw: {ev['raw_body']}")
    if "notifications" in view:
        lines.append("  notifications:")
        for n in view["notifications"]:
            lines.append(
                f"    #{n['id']} {n['kind']} v{n['version']}  {n['state']}, {n['attempts']} attempt(s)"
                + (f", delivered {n['delivered_at']}" if n["delivered_at"] else "")
                + (f", dead {n['dead_at']}" if n["dead_at"] else "")
                + (f", next {n['next_attempt_at']}" if n["next_attempt_at"] and not n["dead_at"] else "")
                + (f", last error: {n['last_error']}" if n["last_error"] else "")
            )
        if not view["notifications"]:
            lines.append("    (none)")
    return "\n".join(lines)
