"""``make bench``'s table: reads the benchmarks' JSON lines on stdin, echoes every line as it
comes (the raw figures stay in the log), then prints one row per JSON line: the case, the
figure, its same-run baseline, the ratio, the targets met or not, and the outcome.

Exits 1 when a line says ``"ok": false`` (a benchmark failed its checks, crashed or gave
up), else 0; a target not met is shown, not a failure."""

from __future__ import annotations

import json
import sys
from typing import Any

CASE_KEYS = ("db", "connections", "mode", "provider", "web_processes", "workers", "batch")
FIGURE_SUFFIXES = ("_per_s", "_per_second", "_ms", "_mb", "_pct")
SKIP = ("ack_", "max_", "rss_mb_at_")


def number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def figures(line: dict[str, Any], baseline: bool) -> str:
    out = []
    for name, value in line.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if name.startswith("baseline_") != baseline or (not baseline and name.startswith(SKIP)):
            continue
        short = name.removeprefix("baseline_")
        if short.endswith(FIGURE_SUFFIXES):
            out.append(f"{short} {number(value)}")
    return ", ".join(out)


def row(line: dict[str, Any]) -> list[str]:
    case = " ".join(f"{k}={line[k]}" for k in CASE_KEYS if k in line)
    targets = line.get("targets") or {}
    met = " ".join(f"{name}:{'met' if ok else 'NOT met'}" for name, ok in targets.items())
    if "skipped" in line:
        outcome = "skipped: " + str(line["skipped"])
    elif line.get("ok") is False:
        outcome = "FAILED" + (f": {line['error']}" if line.get("error") else "")
    else:
        outcome = "ok"
    ratio = line.get("ratio")
    return [
        str(line.get("bench", "?")),
        case,
        figures(line, baseline=False),
        figures(line, baseline=True),
        "" if ratio is None else f"{ratio}x",
        met,
        outcome,
    ]


def main() -> int:
    lines = []
    for raw in sys.stdin:
        print(raw, end="", flush=True)
        try:
            parsed = json.loads(raw)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            lines.append(parsed)
    head = ["bench", "case", "figure", "baseline (same run)", "ratio", "targets", "outcome"]
    rows = [head] + [row(line) for line in lines]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    print()
    for n, r in enumerate(rows):
        print(" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            print("-+-".join("-" * w for w in widths))
    return 1 if any(line.get("ok") is False for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
