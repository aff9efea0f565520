"""``rampwatch export``: the ledger, one line per order created in the range, streamed."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from cli_support import PERSONAL, alix_event, base_env, run, set_created, store_for
from redis import Redis


def test_export_csv_and_jsonl_of_a_range(database_url: str, redis: Redis, tmp_path: Path) -> None:
    store = store_for(database_url)
    store.apply(
        [alix_event("e-1", "SUCCESS"), alix_event("e-2", "AWAITING_PAYMENT"), alix_event("e-3", "FAIL")]
    )
    set_created(
        store, "e-1", datetime(2026, 3, 1, 10, tzinfo=UTC), details={"fee": "1.5", "tx_hash": "0xabc"}
    )
    set_created(store, "e-2", datetime(2026, 3, 2, tzinfo=UTC))
    set_created(store, "e-3", datetime(2026, 4, 1, tzinfo=UTC))
    env = base_env(database_url, redis)
    out = tmp_path / "ledger.csv"
    done = run(
        ["export", "--since", "2026-03-01", "--until", "2026-03-31", "--output", str(out)], env, tmp_path
    )
    assert done.exit_code == 0, done.stderr
    assert "2 order(s) written to" in done.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["external_order_id"] for r in rows] == ["e-1", "e-2"]
    first = rows[0]
    assert (first["provider"], first["kind"], first["fiat_amount"], first["status"]) == (
        "alixpay",
        "sell",
        "700000",
        "SUCCESS",
    )
    assert (
        first["fees"] == "fee=1.5" and first["settled_at"] and first["created_at"].startswith("2026-03-01T10")
    )
    assert rows[1]["settled_at"] == "" and rows[1]["fees"] == ""
    lines = run(["export", "--since", "2026-03-15", "--format", "jsonl"], env, tmp_path)
    assert [json.loads(line)["external_order_id"] for line in lines.stdout.splitlines()] == ["e-3"]
    assert PERSONAL not in out.read_text() and PERSONAL not in lines.stdout
    everything = run(["export", "--format", "jsonl", "--provider", "alixpay"], env, tmp_path)
    assert len(everything.stdout.splitlines()) == 3
    assert run(["export", "--since", "2026-03-02", "--until", "2026-03-01"], env, tmp_path).exit_code == 2
