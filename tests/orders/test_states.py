"""orders.states: the transition table, ``decide``, and the three provider status maps."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orders.providers.alixpay.statuses import STATUS_MAP as ALIXPAY
from orders.providers.changelly.statuses import STATUS_MAP as CHANGELLY
from orders.providers.fuspay.statuses import STATUS_MAP as FUSPAY
from orders.states import (
    RANK,
    TERMINAL,
    TRANSITIONS,
    Decision,
    Mapped,
    OrderPosition,
    Status,
    StatusMap,
    decide,
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


# --------------------------------------------------------------------------- decide


def pos(status: Status, rank: int | None = None) -> OrderPosition:
    return OrderPosition(status, RANK[status] if rank is None else rank)


def m(status: Status, rank: int | None = None) -> Mapped:
    return Mapped(status, RANK[status] if rank is None else rank)


@pytest.mark.parametrize("current", ALL)
@pytest.mark.parametrize("source", ["callback", "poll", "manual"])
@pytest.mark.parametrize("already_applied", [False, True])
def test_unknown_status(current: Status, source: str, already_applied: bool) -> None:
    assert (
        decide(pos(current), None, already_applied=already_applied, source=source) is Decision.UNKNOWN_STATUS
    )


def test_lookup_of_unknown_or_missing_status_is_none() -> None:
    for smap in MAPS.values():
        assert smap.lookup(None) is None
        assert smap.lookup("NOT_A_STATUS") is None
        assert smap.lookup("") is None
    assert ALIXPAY.lookup("success") is None  # case matters
    assert CHANGELLY.lookup("COMPLETE") is None
    assert FUSPAY.lookup("sell.event.close:failed") is None


@pytest.mark.parametrize("current", sorted(TERMINAL))
@pytest.mark.parametrize("incoming", ALL)
@pytest.mark.parametrize("source", ["callback", "poll"])
def test_terminal_absorbs(current: Status, incoming: Status, source: str) -> None:
    got = decide(pos(current), m(incoming), source=source)
    dup = decide(pos(current), m(incoming), already_applied=True, source=source)
    if incoming in TERMINAL and incoming is not current:
        assert got is Decision.CONFLICT
        assert dup is Decision.CONFLICT
    else:
        assert got is Decision.STALE
        assert dup is Decision.DUPLICATE


@pytest.mark.parametrize(("first", "second"), list(itertools.permutations(sorted(TERMINAL), 2)))
def test_different_terminal_after_terminal_is_a_conflict(first: Status, second: Status) -> None:
    assert decide(pos(first), m(second)) is Decision.CONFLICT
    assert decide(pos(first), m(second), source="poll") is Decision.CONFLICT


def test_terminal_absorbs_even_a_higher_rank() -> None:
    assert decide(pos(S.SUCCESS), m(S.SUCCESS, 1000)) is Decision.STALE
    assert decide(pos(S.FAILED), m(S.PROCESSING, 1000)) is Decision.STALE


def test_same_dedup_key_is_a_duplicate() -> None:
    assert decide(pos(S.AWAITING_PAYMENT), m(S.PAYMENT_RECEIVED), already_applied=True) is Decision.DUPLICATE
    assert decide(pos(S.PROCESSING), m(S.PROCESSING), already_applied=True) is Decision.DUPLICATE
    assert decide(pos(S.CREATED), m(S.SUCCESS), already_applied=True) is Decision.DUPLICATE


@pytest.mark.parametrize(
    ("frm", "to"),
    [
        (S.CREATED, S.AWAITING_PAYMENT),
        (S.CREATED, S.PAYMENT_RECEIVED),  # a lost init must not block received
        (S.CREATED, S.PROCESSING),
        (S.CREATED, S.SUCCESS),
        (S.AWAITING_PAYMENT, S.PROCESSING),
        (S.PAYMENT_RECEIVED, S.ON_HOLD),
        (S.PROCESSING, S.ON_HOLD),
        (S.PROCESSING, S.REFUNDED),
        (S.AWAITING_PAYMENT, S.EXPIRED),
        (S.ON_HOLD, S.SUCCESS),
    ],
)
def test_forward_steps_and_skips_are_applied(frm: Status, to: Status) -> None:
    assert decide(pos(frm), m(to)) is Decision.APPLIED


@pytest.mark.parametrize(
    ("frm", "to"),
    [
        (S.PAYMENT_RECEIVED, S.AWAITING_PAYMENT),
        (S.PROCESSING, S.AWAITING_PAYMENT),
        (S.PROCESSING, S.PAYMENT_RECEIVED),
        (S.AWAITING_PAYMENT, S.CREATED),
        (S.ON_HOLD, S.CREATED),
    ],
)
@pytest.mark.parametrize("source", ["callback", "poll"])
def test_backward_is_stale(frm: Status, to: Status, source: str) -> None:
    assert decide(pos(frm), m(to), source=source) is Decision.STALE


def test_equal_rank_is_stale() -> None:
    completed = ALIXPAY.lookup("PAYMENT_COMPLETED")
    transfer = ALIXPAY.lookup("PROCESSING_TOKEN_TRANSFER")
    assert completed is not None and transfer is not None
    assert completed.rank == transfer.rank
    assert decide(OrderPosition(transfer.status, transfer.rank), completed) is Decision.STALE
    assert decide(OrderPosition(completed.status, completed.rank), transfer) is Decision.STALE
    assert decide(pos(S.PROCESSING), m(S.PROCESSING)) is Decision.STALE
    assert decide(pos(S.ON_HOLD), m(S.ON_HOLD), source="poll") is Decision.STALE


def test_allowed_state_with_a_lower_rank_is_stale() -> None:
    # The table allows AWAITING_PAYMENT -> PROCESSING, but rank decides too.
    assert decide(pos(S.AWAITING_PAYMENT, 50), m(S.PROCESSING, 30)) is Decision.STALE


def _changelly_on_hold() -> OrderPosition:
    hold = CHANGELLY.lookup("hold")
    assert hold is not None and hold.status is S.ON_HOLD
    return OrderPosition(hold.status, hold.rank)


@pytest.mark.parametrize("raw", ["pending", "created"])
def test_on_hold_left_for_a_lower_rank_only_by_a_poll(raw: str) -> None:
    incoming = CHANGELLY.lookup(raw)
    assert incoming is not None
    assert incoming.rank < _changelly_on_hold().rank
    assert decide(_changelly_on_hold(), incoming, source="callback") is Decision.STALE
    assert decide(_changelly_on_hold(), incoming, source="manual") is Decision.STALE
    assert decide(_changelly_on_hold(), incoming, source="poll") is Decision.APPLIED
    # A poll reporting the present wins even over an earlier applied event with the same key.
    assert decide(_changelly_on_hold(), incoming, source="poll", already_applied=True) is Decision.APPLIED


def test_fuspay_kyc_hold_left_for_received_only_by_a_poll() -> None:
    hold = FUSPAY.lookup("event.sell.received.fiat_kyc_error")
    received = FUSPAY.lookup("event.sell.received.crypto")
    assert hold is not None and received is not None
    current = OrderPosition(hold.status, hold.rank)
    assert received.rank < hold.rank
    assert decide(current, received, source="callback") is Decision.STALE
    assert decide(current, received, source="poll") is Decision.APPLIED


def test_on_hold_left_for_a_higher_rank_by_any_source() -> None:
    for raw in ("complete", "failed", "refunded", "expired"):
        incoming = CHANGELLY.lookup(raw)
        assert incoming is not None
        assert decide(_changelly_on_hold(), incoming, source="callback") is Decision.APPLIED
        assert decide(_changelly_on_hold(), incoming, source="poll") is Decision.APPLIED


def test_a_poll_does_not_move_other_states_backwards() -> None:
    assert decide(pos(S.PROCESSING), m(S.AWAITING_PAYMENT), source="poll") is Decision.STALE
    assert decide(pos(S.PAYMENT_RECEIVED), m(S.AWAITING_PAYMENT), source="poll") is Decision.STALE


def test_a_poll_never_re_enters_created() -> None:
    assert decide(_changelly_on_hold(), m(S.CREATED), source="poll") is Decision.STALE


# --------------------------------------------------------------------------- provider maps (DESIGN.md)

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


# --------------------------------------------------------------------------- properties

START = OrderPosition(S.CREATED, RANK[S.CREATED])


def run(
    smap: StatusMap, events: Sequence[str], sources: Sequence[str] | None = None
) -> tuple[list[OrderPosition], list[Decision]]:
    """Apply events as the store would: position + the set of applied dedup keys."""
    position, applied = START, set()
    positions, decisions = [position], []
    for i, raw in enumerate(events):
        incoming = smap.lookup(raw)
        source = sources[i] if sources is not None else "callback"
        d = decide(position, incoming, already_applied=raw in applied, source=source)
        if d is Decision.APPLIED:
            assert incoming is not None
            position = OrderPosition(incoming.status, incoming.rank)
            applied.add(raw)
        positions.append(position)
        decisions.append(d)
    return positions, decisions


@st.composite
def lifecycles(draw: st.DrawFn, smap: StatusMap) -> list[str]:
    """A strictly rank-increasing chain of the map's statuses, at most one terminal, last."""
    by_rank: dict[int, list[str]] = {}
    terminals = []
    for raw, e in sorted(smap.entries.items()):
        if e.status in TERMINAL:
            terminals.append(raw)
        else:
            by_rank.setdefault(e.rank, []).append(raw)
    ranks = draw(st.lists(st.sampled_from(sorted(by_rank)), unique=True).map(sorted))
    chain = [draw(st.sampled_from(by_rank[r])) for r in ranks]
    end = draw(st.none() | st.sampled_from(terminals))
    if end is not None:
        chain.append(end)
    return chain


def assert_terminal_sticks(positions: list[OrderPosition]) -> None:
    for i, p in enumerate(positions):
        if p.status in TERMINAL:
            assert all(q == p for q in positions[i:]), positions
            return


@pytest.mark.parametrize("provider", sorted(MAPS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_permutation_with_duplicates_ends_where_the_ordered_sequence_ends(
    provider: str, data: st.DataObject
) -> None:
    smap = MAPS[provider]
    chain = data.draw(lifecycles(smap), label="lifecycle")
    ordered, ordered_decisions = run(smap, chain)
    # The ordered lifecycle applies every step and ends at its last status.
    assert ordered_decisions == [Decision.APPLIED] * len(chain)
    if chain:
        last = smap.lookup(chain[-1])
        assert last is not None
        assert ordered[-1] == OrderPosition(last.status, last.rank)
    else:
        assert ordered[-1] == START

    extra = data.draw(st.lists(st.sampled_from(chain), max_size=8) if chain else st.just([]), label="dups")
    shuffled = data.draw(st.permutations(chain + extra), label="events")
    positions, decisions = run(smap, shuffled)
    assert positions[-1].status is ordered[-1].status
    assert positions[-1] == ordered[-1]
    assert_terminal_sticks(positions)
    assert Decision.CONFLICT not in decisions
    assert Decision.UNKNOWN_STATUS not in decisions
    # Callbacks never move an order backwards.
    assert [p.rank for p in positions] == sorted(p.rank for p in positions)


@pytest.mark.parametrize("provider", sorted(MAPS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_arbitrary_events_never_leave_a_terminal_state(provider: str, data: st.DataObject) -> None:
    smap = MAPS[provider]
    raw = st.sampled_from([*sorted(smap.entries), "UNKNOWN_STATUS_X"])
    events = data.draw(st.lists(raw, max_size=25), label="events")
    sources = data.draw(
        st.lists(st.sampled_from(["callback", "poll"]), min_size=len(events), max_size=len(events)),
        label="sources",
    )
    positions, decisions = run(smap, events, sources)
    assert_terminal_sticks(positions)
    for before, raw_status, d in zip(positions[:-1], events, decisions, strict=True):
        incoming = smap.lookup(raw_status)
        if incoming is None:
            assert d is Decision.UNKNOWN_STATUS
        elif before.status in TERMINAL:
            assert d is not Decision.APPLIED
            if incoming.status in TERMINAL and incoming.status is not before.status:
                assert d is Decision.CONFLICT
    # Every position is one the table allows from the one before.
    for a, b in itertools.pairwise(positions):
        if a != b:
            assert b.status in TRANSITIONS[a.status]
