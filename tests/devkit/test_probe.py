"""devkit.probe against the real receiver on loopback: every hostile case refused with a 4xx."""

from __future__ import annotations

from conftest import Stack

from devkit.probe import CASES, PROVIDERS, render, table


def test_every_hostile_case_gets_a_4xx_with_a_json_reason(stack: Stack) -> None:
    rows = table(stack.base)
    assert len(rows) == len(CASES) + 2 and rows[0] == ["case", *PROVIDERS]
    for row in rows[1:-1]:
        for answer in row[1:]:
            status, code = answer.split(" ", 1)
            assert 400 <= int(status) < 500 and code != "not JSON", (row[0], answer)
    assert not stack.runtime.queues.events.count  # nothing unverified was queued
    assert stack.runtime.stream.depths()["callbacks"] == 0
    assert "| case" in render(rows)
