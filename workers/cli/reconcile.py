"""Bringing orders in line with the providers: ``reconcile``, ``backfill``, ``replay``."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import datetime
from typing import Any

import click

from workers.cli.common import (
    WHEN,
    Failure,
    Runtime,
    checked,
    emit_json,
    json_option,
    pass_runtime,
    progress,
    provider_choice,
)


@click.command()
@click.option("--provider", type=provider_choice(), help="Every open order of this provider.")
@click.option("--order", "order_id", help="One external order id (needs --provider).")
@click.option("--all-open", is_flag=True, help="Every open order of every enabled provider.")
@click.option("--since", type=WHEN, help="Only orders created since (ISO date/time, or an age: 6h, 2d).")
@click.option("--until", type=WHEN, help="Only orders created before.")
@click.option("--dry-run", is_flag=True, help="Ask the provider, apply nothing.")
@click.option("--enqueue", is_flag=True, help="Queue the polls for the workers instead.")
@json_option
@pass_runtime
def reconcile(
    rt: Runtime,
    provider: str | None,
    order_id: str | None,
    all_open: bool,
    since: datetime | None,
    until: datetime | None,
    dry_run: bool,
    enqueue: bool,
    as_json: bool,
) -> None:
    """Poll providers for orders and apply what they say (the workers need not be up).

    Prints each answer and decision; exits 1 when a poll failed."""
    from orders import queries
    from orders.errors import RampwatchError
    from workers import jobs

    if order_id and not provider:
        raise Failure("--order needs --provider", code=2)
    if order_id and (since or until):
        raise Failure("--order names one order: --since and --until do not apply", code=2)
    if since and until and until <= since:
        raise Failure("--until must be after --since", code=2)
    if not (order_id or provider or all_open or since or until):
        raise Failure("give --order, --provider, --all-open or --since/--until", code=2)
    services = rt.services()
    if provider and provider not in services.adapters:
        raise Failure(f"provider {provider} is not configured", code=2)
    services.install()
    if order_id:
        targets = [(provider or "", order_id)]
    else:
        found = queries.orders_created(services.store, provider=provider, since=since, until=until)
        targets = [t for t in found if t[0] in services.adapters]
    failures = 0
    results: list[dict[str, Any]] = []

    def report(p: str, o: str, text: str, **data: Any) -> None:
        results.append({"provider": p, "external_order_id": o, **data})
        if not as_json:
            click.echo(f"{p} {o}: {text}")

    with progress(targets, len(targets), "reconciling", output_on_terminal=sys.stdout.isatty()) as items:
        for p, o in items:
            if enqueue:
                queued = services.queues.enqueue_poll(p, o, reason="cli")
                report(p, o, "poll queued" if queued else "poll already queued", queued=queued)
                continue
            try:
                if dry_run:
                    event = services.adapter(p).poll(o)
                    report(
                        p,
                        o,
                        f"provider says {event.provider_status} (dry run, nothing applied)",
                        provider_status=event.provider_status,
                        dry_run=True,
                    )
                    continue
                result = jobs.poll_order(p, o, reason="cli")
            except RampwatchError as exc:
                failures += 1
                report(p, o, f"FAILED {type(exc).__name__}: {exc}", error=f"{type(exc).__name__}: {exc}")
                continue
            if result.get("deferred"):
                report(p, o, f"another poll of it is under way; one more is {result['queued']}", **result)
                continue
            report(
                p,
                o,
                f"provider says {result['provider_status']} -> {result['decision']}; "
                f"now {result['status']} v{result['version']}",
                **result,
            )
    if as_json:
        emit_json({"orders": results, "failures": failures})
    else:
        click.echo(f"{len(targets)} order(s), {failures} failure(s)")
    if failures:
        click.get_current_context().exit(1)


@click.command()
@click.option("--provider", type=provider_choice(), required=True, help="A provider with an order-list API.")
@click.option("--since", type=WHEN, required=True, help="ISO date or date-time (UTC if no zone).")
@click.option("--until", type=WHEN, help="ISO date or date-time (default: now).")
@click.option("--dry-run", is_flag=True, help="List what the provider has, apply nothing.")
@json_option
@pass_runtime
def backfill(
    rt: Runtime, provider: str, since: datetime, until: datetime | None, dry_run: bool, as_json: bool
) -> None:
    """Fetch a provider's orders by date range and apply them (adopting unknown ones)."""
    from orders.errors import RampwatchError
    from orders.providers.base import BackfillingAdapter

    services = rt.services()
    adapter = services.adapters.get(provider)
    if adapter is None:
        raise Failure(f"provider {provider} is not configured", code=2)
    if not isinstance(adapter, BackfillingAdapter):
        raise Failure(f"{provider} has no order-list API to backfill from", code=2)
    if until and until <= since:
        raise Failure("--until must be after --since", code=2)
    store = services.store
    seen: Counter[str] = Counter()
    batch = []
    try:
        for event in adapter.backfill(since, until):
            seen["orders"] += 1
            known = store.exists(provider, event.external_order_id)
            if dry_run:
                if not as_json:
                    click.echo(
                        f"{event.external_order_id}: {event.provider_status}{'' if known else ' (unknown to us)'}"
                    )
                continue
            seen["adopted"] += 0 if known else 1
            batch.append(event)
            if len(batch) >= 100:
                seen.update(o.decision.value for o in store.apply(batch))
                batch.clear()
        if batch:
            seen.update(o.decision.value for o in store.apply(batch))
    except RampwatchError as exc:
        raise Failure(f"stopped after {seen['orders']} order(s): {type(exc).__name__}: {exc}") from exc
    if as_json:
        emit_json({"provider": provider, "dry_run": dry_run, **dict(seen)})
        return
    summary = ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))
    click.echo(f"backfill {provider}: {summary or 'no orders'}{' (dry run)' if dry_run else ''}")


@click.command()
@click.argument("event_id", type=click.IntRange(min=1))
@json_option
@pass_runtime
def replay(rt: Runtime, event_id: int, as_json: bool) -> None:
    """Apply a recorded event again through the writer (source "replay").

    A replay trusts the event no more than its record did: only what its signature
    or answer covered is covered again, an unsigned claim stays a claim, and it
    keeps its original observation time (so an old event cannot pass for new)."""
    services = rt.services()
    outcome = checked(lambda: services.store.replay_event(event_id))
    if outcome is None:
        raise Failure(f"no event {event_id}")
    services.deliver_change(outcome)
    event = outcome.event
    if as_json:
        emit_json(
            {
                "event_id": event_id,
                "provider": event.provider,
                "external_order_id": event.external_order_id,
                "decision": outcome.decision.value,
                "status": outcome.status.value,
                "version": outcome.version,
                "changed": outcome.changed,
                "replayed_before": outcome.replayed,
            }
        )
        return
    what = event.provider_status if event.covered("provider_status") else f"claimed: {event.claimed_status}"
    again = " (replayed before: counted)" if outcome.replayed else ""
    click.echo(
        f"event {event_id} ({what}) replayed on {event.provider} {event.external_order_id}: "
        f"{outcome.decision.value}{again}; now {outcome.status.value} v{outcome.version}"
    )
