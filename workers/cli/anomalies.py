"""``rampwatch anomalies``: what operators must look at, and marking it resolved."""

from __future__ import annotations

import json

import click

from orders.plan import AnomalyKind
from workers.cli.common import (
    Failure,
    Runtime,
    emit_json,
    json_option,
    pass_runtime,
    provider_choice,
    say,
    table,
)

KINDS = sorted(v for k, v in vars(AnomalyKind).items() if k.isupper())


@click.group()
def anomalies() -> None:
    """List anomalies (conflicts, unknown statuses, amount mismatches, stale orders) and resolve them."""


@anomalies.command("list")
@click.option("--all", "everything", is_flag=True, help="Resolved ones too (default: open only).")
@click.option("--kind", type=click.Choice(KINDS), help="Only this kind.")
@click.option("--provider", type=provider_choice(), help="Only this provider's orders.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
@pass_runtime
def list_anomalies(
    rt: Runtime, everything: bool, kind: str | None, provider: str | None, limit: int, as_json: bool
) -> None:
    """Anomalies, newest first (open ones unless --all)."""
    from orders import queries
    from orders.views import anomaly_dict

    filters = queries.AnomalyFilters(resolved=None if everything else False, kind=kind, provider=provider)
    page = queries.anomalies(rt.reader(), filters, before=None, limit=limit)
    views = [anomaly_dict(r.anomaly, r.provider, r.external_order_id) for r in page.items]
    if as_json:
        emit_json({"anomalies": views, "more": page.more})
        return
    if not views:
        say("no anomalies" if everything else "no open anomalies")
        return
    rows = [
        (
            v["id"],
            v["kind"],
            v["provider"],
            v["external_order_id"],
            json.dumps(v["detail"], sort_keys=True),
            v["created_at"],
            f"resolved {v['resolved_at']}" if v["resolved_at"] else "open",
        )
        for v in views
    ]
    click.echo(table(("id", "kind", "provider", "order", "detail", "raised", "state"), rows))
    if page.more:
        say(f"(the newest {limit} shown; more match: raise --limit)")


@anomalies.command("resolve")
@click.argument("anomaly_id", type=click.IntRange(min=1))
@click.option("--comment", required=True, help="What was done about it (kept with the anomaly).")
@json_option
@pass_runtime
def resolve(rt: Runtime, anomaly_id: int, comment: str, as_json: bool) -> None:
    """Mark an anomaly resolved, with the operator's comment."""
    from orders.errors import AnomalyNotFound, Conflict
    from orders.views import anomaly_dict

    if not comment.strip():
        raise Failure("--comment must say what was done", code=2)
    try:
        anomaly, provider, order_id = rt.store().resolve_anomaly(anomaly_id, comment.strip())
    except (AnomalyNotFound, Conflict) as exc:
        raise Failure(str(exc)) from exc
    if as_json:
        emit_json(anomaly_dict(anomaly, provider, order_id))
        return
    click.echo(f"anomaly {anomaly_id} ({anomaly.kind}, {provider} {order_id}) resolved")
