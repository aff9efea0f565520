"""orders.states: the transition table and the three provider status maps (what an event
does to an order is tested in ``test_plan``)."""

from __future__ import annotations

import itertools

import pytest

from orders.providers.alixpay.statuses import STATUS_MAP as ALIXPAY
from orders.providers.changelly.statuses import STATUS_MAP as CHANGELLY
from orders.providers.fuspay.statuses import STATUS_MAP as FUSPAY
from orders.states import (
    RANK,
    TERMINAL,
    TRANSITIONS,
    Mapped,
    Status,
    StatusMap,
    reachable,
)

S = Status
ALL = list(Status)
NON_TERMINAL = [s for s in Status if s not in TERMINAL]
MAPS = {"alixpay": ALIXPAY, "fuspay": FUSPAY, "changelly": CHANGELLY}

# --------------------------------------------------------------------------- the transition table

# Rows are "from", columns are "to"; "x" = allowed, "." = not allowed.
# A change to TRANSITIONS must change this table too.
TABLE = """
                    CREATED  AWAITING  RECEIVED  PROCESS  ON_HOLD  SUCCESS  FAILED  REFUNDED  EXPIRED
CREATED             .        x         x         x        x        x        x       x         x
AWAITING_PAYMENT    .        .         x         x        x        x        x       x         x
PAYMENT_RECEIVED    .        .         .         x        x        x        x       x         x
PROCESSING          .        .         .         .        x        x        x       x         x
ON_HOLD             .        x         x         x        .        x        x       x         x
SUCCESS             .        .         .         .        .        .        .       .         .
FAILED              .        .         .         .        .        .        .       .         .
REFUNDED            .        .         .         .        .        .        .       .         .
EXPIRED             .        .         .         .        .        .        .       .         .
"""
COLUMNS = [
    S.CREATED,
    S.AWAITING_PAYMENT,
    S.PAYMENT_RECEIVED,
    S.PROCESSING,
    S.ON_HOLD,
    S.SUCCESS,
    S.FAILED,
    S.REFUNDED,
    S.EXPIRED,
]


def _expected_table() -> dict[tuple[Status, Status], bool]:
    rows = [line.split() for line in TABLE.strip().splitlines()[1:]]
    assert [Status(r[0]) for r in rows] == COLUMNS
    out = {}
    for row in rows:
        assert len(row) == 1 + len(COLUMNS)
        for to, mark in zip(COLUMNS, row[1:], strict=True):
            assert mark in ("x", ".")
            out[(Status(row[0]), to)] = mark == "x"
    return out


EXPECTED = _expected_table()


def test_expected_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(itertools.product(Status, Status))
    assert len(EXPECTED) == 81
    assert set(TRANSITIONS) == set(Status)


@pytest.mark.parametrize(("frm", "to"), sorted(EXPECTED, key=lambda p: (ALL.index(p[0]), ALL.index(p[1]))))
def test_transition(frm: Status, to: Status) -> None:
    assert (to in TRANSITIONS[frm]) is EXPECTED[(frm, to)], f"{frm} -> {to}"


def test_statuses_and_terminals() -> None:
    assert [s.value for s in Status] == [c.name for c in COLUMNS]
    assert {s.value for s in TERMINAL} == {"SUCCESS", "FAILED", "REFUNDED", "EXPIRED"}


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_no_exit_from_a_terminal_state(state: Status) -> None:
    assert TRANSITIONS[state] == frozenset()
    assert reachable(state) == {state}


def test_every_state_is_reachable_from_created() -> None:
    assert reachable() == set(Status)
    assert reachable(S.CREATED) == set(Status)
    # Independently of ``reachable``: a breadth-first walk of the table.
    seen, frontier = {S.CREATED}, {S.CREATED}
    while frontier:
        frontier = {n for s in frontier for n in TRANSITIONS[s]} - seen
        seen |= frontier
    assert seen == set(Status)


def test_created_is_never_re_entered() -> None:
    for frm, targets in TRANSITIONS.items():
        assert S.CREATED not in targets, frm


def test_no_self_transitions() -> None:
    for frm, targets in TRANSITIONS.items():
        assert frm not in targets


@pytest.mark.parametrize("state", [s for s in NON_TERMINAL if s is not S.ON_HOLD])
def test_on_hold_is_enterable_from_every_non_terminal_state(state: Status) -> None:
    assert S.ON_HOLD in TRANSITIONS[state]


def test_on_hold_leaves_to_every_non_terminal_state_but_created_and_to_every_end() -> None:
    assert TRANSITIONS[S.ON_HOLD] == (set(NON_TERMINAL) - {S.CREATED, S.ON_HOLD}) | TERMINAL


def test_every_non_terminal_state_can_end_every_way() -> None:
    for state in NON_TERMINAL:
        assert TERMINAL <= TRANSITIONS[state], state


def test_default_ranks_follow_the_lifecycle() -> None:
    assert set(RANK) == set(Status)
    assert RANK[S.CREATED] < RANK[S.AWAITING_PAYMENT] < RANK[S.PAYMENT_RECEIVED] < RANK[S.PROCESSING]
    assert max(RANK[s] for s in NON_TERMINAL) < min(RANK[s] for s in TERMINAL)
    assert min(RANK.values()) == RANK[S.CREATED]


# --------------------------------------------------------------------------- provider maps (docs/architecture.md)

EXPECTED_MAPS: dict[str, dict[str, Status]] = {
    "alixpay": {
        "AWAITING_PAYMENT": S.AWAITING_PAYMENT,
        "PAYMENT_COMPLETED": S.PROCESSING,
        "PROCESSING_TOKEN_TRANSFER": S.PROCESSING,
        "SUCCESS": S.SUCCESS,
        "FAIL": S.FAILED,
        "ERROR": S.FAILED,
    },
    "fuspay": {
        "event.sell.init": S.AWAITING_PAYMENT,
        "event.sell.received.crypto": S.PAYMENT_RECEIVED,
        "event.sell.received.fiat_kyc_error": S.ON_HOLD,
        "event.sell.credited.fiat": S.SUCCESS,
        "event.sell.error": S.FAILED,
        "sell.event.close": S.REFUNDED,
        "event.buy.init": S.AWAITING_PAYMENT,
        "event.buy.received.fiat": S.PAYMENT_RECEIVED,
        "event.buy.credited.crypto": S.SUCCESS,
        "event.buy.error": S.FAILED,
    },
    "changelly": {
        "created": S.AWAITING_PAYMENT,
        "pending": S.PROCESSING,
        "hold": S.ON_HOLD,
        "complete": S.SUCCESS,
        "failed": S.FAILED,
        "refunded": S.REFUNDED,
        "expired": S.EXPIRED,
    },
}


@pytest.mark.parametrize("provider", sorted(MAPS))
def test_provider_map_matches_design(provider: str) -> None:
    smap = MAPS[provider]
    assert isinstance(smap, StatusMap)
    assert smap.provider == provider
    assert {raw: e.status for raw, e in smap.entries.items()} == EXPECTED_MAPS[provider]
    for raw, status in EXPECTED_MAPS[provider].items():
        found = smap.lookup(raw)
        assert found is not None and found.status is status


@pytest.mark.parametrize("provider", sorted(MAPS))
def test_provider_ranks_put_terminals_last(provider: str) -> None:
    entries = MAPS[provider].entries.values()
    terminal = [e.rank for e in entries if e.status in TERMINAL]
    open_ = [e.rank for e in entries if e.status not in TERMINAL]
    assert min(terminal) > max(open_)
    assert min(open_) > RANK[S.CREATED]


@pytest.mark.parametrize("provider", sorted(MAPS))
def test_provider_ranks_follow_the_canonical_lifecycle(provider: str) -> None:
    # Among non-hold, non-terminal entries, rank order agrees with the canonical order.
    entries = [e for e in MAPS[provider].entries.values() if e.status not in TERMINAL | {S.ON_HOLD}]
    for a, b in itertools.permutations(entries, 2):
        if RANK[a.status] < RANK[b.status]:
            assert a.rank < b.rank
        if a.status is b.status:
            assert a.rank == b.rank


def test_changelly_hold_follows_pending_and_fuspay_kyc_hold_follows_received() -> None:
    assert CHANGELLY.entries["hold"].rank > CHANGELLY.entries["pending"].rank
    assert FUSPAY.entries["event.sell.received.fiat_kyc_error"].rank > (
        FUSPAY.entries["event.sell.received.crypto"].rank
    )


def test_status_map_build() -> None:
    smap = StatusMap.build("x", {"a": S.PROCESSING, "b": (S.ON_HOLD, 7)})
    assert smap.entries == {"a": Mapped(S.PROCESSING, RANK[S.PROCESSING]), "b": Mapped(S.ON_HOLD, 7)}
    assert smap.lookup("b") == Mapped(S.ON_HOLD, 7)
