"""``rampwatch export``: the ledger, one line per order, as CSV or JSON lines.

Streamed (``orders.queries.ledger``: a server-side cursor read in batches), so an
export of any size holds one batch in memory. Only order columns, which hold what a
signature or a verified answer covered: never a raw body.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import click

from workers.cli.common import WHEN, Failure, Runtime, pass_runtime, progress, provider_choice, say

COLUMNS = (
    "provider",
    "external_order_id",
    "provider_order_id",
    "kind",
    "crypto_amount",
    "crypto_currency",
    "fiat_amount",
    "fiat_currency",
    "fees",
    "status",
    "provider_status",
    "created_at",
    "settled_at",
)
# Fee fields a provider's details may carry (none of today's adapters keeps one).
FEE_DETAILS = ("fee", "fees", "network_fee", "processing_fee", "markup_fee")


def ledger_line(order: Any) -> dict[str, Any]:
    details = order.details or {}
    fees = {k: details[k] for k in FEE_DETAILS if details.get(k) not in (None, "")}
    return {
        "provider": order.provider,
        "external_order_id": order.external_order_id,
        "provider_order_id": order.provider_order_id,
        "kind": order.kind,
        "crypto_amount": order.crypto_amount,
        "crypto_currency": order.crypto_currency,
        "fiat_amount": order.fiat_amount,
        "fiat_currency": order.fiat_currency,
        "fees": fees or None,
        "status": order.status,
        "provider_status": order.provider_status,
        "created_at": order.created_at.isoformat() if order.created_at else None,
        "settled_at": order.terminal_at.isoformat() if order.terminal_at else None,
    }


@click.command()
@click.option("--since", type=WHEN, help="Orders created since (ISO date/time, or an age: 30d).")
@click.option("--until", type=WHEN, help="Orders created before.")
@click.option("--provider", type=provider_choice(), help="Only this provider's orders.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file instead of stdout.",
)
@pass_runtime
def export(
    rt: Runtime,
    since: datetime | None,
    until: datetime | None,
    provider: str | None,
    fmt: str,
    output: Path | None,
) -> None:
    """The ledger: one line per order created in the range (provider, ids, kind,
    amounts and currencies, fees when the provider gives them, status, created,
    settled)."""
    from orders import queries

    if since and until and until <= since:
        raise Failure("--until must be after --since", code=2)
    store = rt.reader()
    total = queries.count_ledger(store, since=since, until=until, provider=provider)
    lines = queries.ledger(store, since=since, until=until, provider=provider)
    sink: TextIO = open(output, "w", newline="", encoding="utf-8") if output else sys.stdout
    try:
        on_terminal = output is None and sys.stdout.isatty()
        with progress(lines, total, "exporting", output_on_terminal=on_terminal) as orders:
            count = write(sink, orders, fmt)
    finally:
        if output:
            sink.close()
    if output:
        say(f"{count} order(s) written to {output}")


def write(sink: TextIO, orders: Any, fmt: str) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(sink, fieldnames=COLUMNS)
        writer.writeheader()
        for order in orders:
            line = ledger_line(order)
            fees = line["fees"]
            line["fees"] = ";".join(f"{k}={v}" for k, v in fees.items()) if fees else ""
            writer.writerow(line)
            count += 1
    else:
        for order in orders:
            sink.write(json.dumps(ledger_line(order), separators=(",", ":"), ensure_ascii=False) + "\n")
            count += 1
    sink.flush()
    return count
