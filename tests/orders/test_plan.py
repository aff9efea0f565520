"""orders.plan: what one event does to one order, exhaustively and as properties.

The plan is tested the way a state machine is: every (current state, incoming
state, source, applied before) against an oracle written out here; the named
rules one by one; and hypothesis properties over consistent provider histories
(callbacks and polls with fetch times, holds and resumes, duplicates), in any
order of arrival.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orders.events import COVERS_ALL, Event
from orders.plan import (
    KEPT_DETAILS,
    Observation,
    OrderFacts,
    Plan,
    PollPolicyLike,
    Position,
    facts_with,
    plan,
    remember,
    resolve,
)
from orders.providers.alixpay.statuses import STATUS_MAP as ALIXPAY
from orders.providers.changelly.statuses import STATUS_MAP as CHANGELLY
from orders.providers.fuspay.statuses import STATUS_MAP as FUSPAY
from orders.states import RANK, REFUSED, TERMINAL, TRANSITIONS, Decision, Status, StatusMap

S = Status
T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = PollPolicyLike(backoff=(10, 20, 40))
MAPS = {"alixpay": ALIXPAY, "fuspay": FUSPAY, "changelly": CHANGELLY}
# One provider status per canonical state, at the default ranks.
GENERIC = StatusMap.build("generic", {s.value: s for s in Status if s is not S.CREATED})
ANSWERS = ("poll", "create")
CALLBACKS = ("callback", "manual")
SCHEDULE = {"last_polled_at", "poll_attempts", "next_poll_at"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(
    status: str | None,
    *,
    source: str = "callback",
    when: float = 0.0,
    body: str | None = None,
    covers: tuple[str, ...] | None = COVERS_ALL,
    provider: str = "generic",
    **fields: object,
) -> Event:
    moment = at(when).isoformat()
    return Event(
        provider=provider,
        external_order_id="o-1",
        provider_status=status,
        source=source,
        dedup_key=f"status:{status}" if status else "create",
        raw_body=body if body is not None else f"{source}:{status}:{when}",
        received_at=moment,
        fetched_at=moment if source in ANSWERS else None,
        covers=covers,
        **fields,  # type: ignore[arg-type]
    )


@dataclass
class Sim:
    """The store's bookkeeping without a database: facts and history, event by event."""

    smap: StatusMap
    facts: OrderFacts = field(default_factory=OrderFacts)
    history: list[Observation] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)  # the order's rank after each event

    def feed(self, ev: Event, now: float | None = None) -> Plan:
        decided = plan(self.facts, self.history, ev, self.smap, POLICY, at(now if now is not None else 1e6))
        self.facts = facts_with(self.facts, decided.changes)
        self.history = remember(self.history, ev, decided)
        self.plans.append(decided)
        self.ranks.append(self.facts.rank)
        return decided

    @property
    def position(self) -> Position:
        return self.facts.position


def standing_at(current: Status, smap: StatusMap = GENERIC, applied_before: Status | None = None) -> Sim:
    """A simulated order at ``current``, reached by an answer at t=0 (after
    ``applied_before``, applied by a callback at t=-5, if given)."""
    sim = Sim(smap)
    if applied_before is not None:
        sim.feed(event(applied_before.value, when=-5))
    if current is not S.CREATED:
        sim.feed(event(current.value, source="poll", when=0))
    return sim


# --------------------------------------------------------------------------- exhaustive


def oracle(current: Status, incoming: Status, source: str, applied_before: bool) -> Decision:
    """What an event of ``incoming``, observed at t=10, does to an order at ``current``
    (reached by an answer at t=0)."""
    refused = Decision.DUPLICATE if applied_before else Decision.STALE
    if incoming is current:  # its status was applied to get here
        return Decision.CONFIRMED if source in ANSWERS and current not in TERMINAL else Decision.DUPLICATE
    if current in TERMINAL:
        return Decision.CONFLICT if incoming in TERMINAL else refused
    if incoming is S.ON_HOLD:
        return Decision.APPLIED  # a hold newer than anything else the order has seen
    if current is S.ON_HOLD and source in ANSWERS:
        return Decision.APPLIED  # a newer answer lifts a hold, whatever its rank
    if RANK[incoming] > RANK[current]:
        return Decision.APPLIED
    return refused


def _cases() -> list[tuple[Status, Status, str, bool]]:
    """Every (current, incoming, source, applied before) an order can be in."""
    cases = []
    for current, incoming, source in itertools.product(
        Status, [s for s in Status if s is not S.CREATED], [*CALLBACKS, *ANSWERS]
    ):
        cases.append((current, incoming, source, False))
        if incoming is not current and standing_at(current, applied_before=incoming).facts.status is current:
            cases.append((current, incoming, source, True))
    return cases


@pytest.mark.parametrize(("current", "incoming", "source", "applied_before"), _cases())
def test_every_state_source_and_status(
    current: Status, incoming: Status, source: str, applied_before: bool
) -> None:
    sim = standing_at(current, applied_before=incoming if applied_before else None)
    assert sim.facts.status is current
    version = sim.facts.version
    decided = sim.feed(event(incoming.value, source=source, when=10))
    assert decided.decision is oracle(current, incoming, source, applied_before), decided
    if decided.decision is Decision.APPLIED:
        assert decided.after is incoming or (current is S.ON_HOLD and RANK[decided.after] >= RANK[incoming])
        assert decided.after in TRANSITIONS[current]
        assert decided.version == version + 1
    else:
        assert decided.after is current
    if decided.decision in REFUSED:
        assert set(decided.changes) <= SCHEDULE, decided.changes
        assert decided.version == version


@pytest.mark.parametrize("current", list(Status))
@pytest.mark.parametrize("source", [*CALLBACKS, *ANSWERS])
def test_unknown_status_is_refused_with_an_anomaly(current: Status, source: str) -> None:
    sim = standing_at(current)
    decided = sim.feed(event("NOT_A_STATUS", source=source, when=5, fiat_amount="999"))
    assert decided.decision is Decision.UNKNOWN_STATUS
    assert [kind for kind, _ in decided.anomalies] == ["unknown_status"]
    assert set(decided.changes) <= SCHEDULE
    assert sim.facts.fiat_amount is None


@pytest.mark.parametrize(("first", "second"), list(itertools.permutations(sorted(TERMINAL), 2)))
@pytest.mark.parametrize("source", [*CALLBACKS, *ANSWERS])
def test_different_terminal_after_terminal_is_a_conflict(first: Status, second: Status, source: str) -> None:
    sim = standing_at(first)
    decided = sim.feed(event(second.value, source=source, when=5))
    assert decided.decision is Decision.CONFLICT
    assert [kind for kind, _ in decided.anomalies] == ["conflict"]
    assert sim.facts.status is first


def test_lookup_of_unknown_or_missing_status_is_none() -> None:
    for smap in MAPS.values():
        assert smap.lookup(None) is None
        assert smap.lookup("NOT_A_STATUS") is None
        assert smap.lookup("") is None
    assert ALIXPAY.lookup("success") is None  # case matters
    assert CHANGELLY.lookup("COMPLETE") is None
    assert FUSPAY.lookup("sell.event.close:failed") is None


# --------------------------------------------------------------------------- named rules


def test_a_lost_init_does_not_block_a_later_step() -> None:
    sim = Sim(GENERIC)
    assert sim.feed(event("PAYMENT_RECEIVED")).decision is Decision.APPLIED
    assert sim.feed(event("AWAITING_PAYMENT", when=1)).decision is Decision.STALE


def test_equal_ranks_settle_on_the_later_listed_status_whatever_arrives_first() -> None:
    completed, transfer = ALIXPAY.lookup("PAYMENT_COMPLETED"), ALIXPAY.lookup("PROCESSING_TOKEN_TRANSFER")
    assert completed is not None and transfer is not None and completed.rank == transfer.rank
    a = Sim(ALIXPAY)
    a.feed(event("PAYMENT_COMPLETED", provider="alixpay"))
    assert a.feed(event("PROCESSING_TOKEN_TRANSFER", provider="alixpay", when=1)).decision is Decision.APPLIED
    b = Sim(ALIXPAY)
    b.feed(event("PROCESSING_TOKEN_TRANSFER", provider="alixpay"))
    assert b.feed(event("PAYMENT_COMPLETED", provider="alixpay", when=1)).decision is Decision.STALE
    assert a.position == b.position == Position(S.PROCESSING, transfer.rank, "PROCESSING_TOKEN_TRANSFER")


@pytest.mark.parametrize("raw", ["pending", "created"])
def test_a_changelly_hold_is_lifted_only_by_a_newer_answer(raw: str) -> None:
    sim = Sim(CHANGELLY)
    sim.feed(event("pending", source="poll", when=0, provider="changelly"))
    sim.feed(event("hold", source="poll", when=10, provider="changelly"))
    assert sim.facts.status is S.ON_HOLD
    assert sim.feed(event(raw, source="callback", when=20, provider="changelly")).decision in (
        Decision.STALE,
        Decision.DUPLICATE,
    )
    older = sim.feed(event(raw, source="poll", when=5, provider="changelly", body="older"))
    assert older.decision is not Decision.APPLIED and sim.facts.status is S.ON_HOLD
    newer = sim.feed(event(raw, source="poll", when=30, provider="changelly", body="newer"))
    assert newer.decision is Decision.APPLIED and sim.facts.status is S.PROCESSING  # forward only: pending


def test_a_fuspay_kyc_hold_is_lifted_by_a_newer_answer_only() -> None:
    sim = Sim(FUSPAY)
    sim.feed(event("event.sell.received.crypto", when=0, provider="fuspay"))
    sim.feed(event("event.sell.received.fiat_kyc_error", when=10, provider="fuspay"))
    assert sim.facts.status is S.ON_HOLD
    late = sim.feed(event("event.sell.received.crypto", when=20, provider="fuspay", body="again"))
    assert late.decision is Decision.DUPLICATE and sim.facts.status is S.ON_HOLD
    lifted = sim.feed(event("event.sell.received.crypto", source="poll", when=30, provider="fuspay"))
    assert lifted.decision is Decision.APPLIED and sim.facts.status is S.PAYMENT_RECEIVED


def test_a_hold_applied_after_a_newer_answer_does_not_outlive_it() -> None:
    """The hold callback arrived at t=10, the answer that lifted it was fetched at
    t=20; the worker applies the answer first, then the hold."""
    sim = Sim(CHANGELLY)
    sim.feed(event("pending", source="poll", when=0, provider="changelly"))
    sim.feed(event("pending", source="poll", when=20, provider="changelly", body="p20"))
    decided = sim.feed(event("hold", source="callback", when=10, provider="changelly"))
    assert decided.decision is Decision.STALE and sim.facts.status is S.PROCESSING


def test_a_new_hold_after_a_resume_holds_again() -> None:
    sim = Sim(CHANGELLY)
    sim.feed(event("hold", source="poll", when=0, provider="changelly"))
    sim.feed(event("pending", source="poll", when=10, provider="changelly"))
    again = sim.feed(event("hold", source="poll", when=20, provider="changelly", body="hold again"))
    assert again.decision is Decision.APPLIED and sim.facts.status is S.ON_HOLD
    assert again.record_key.startswith("status:hold@v")  # one applied event per key, still


def test_a_poll_never_moves_an_order_back() -> None:
    sim = Sim(GENERIC)
    sim.feed(event("PROCESSING", when=0))
    lagging = sim.feed(event("AWAITING_PAYMENT", source="poll", when=10))
    assert lagging.decision is Decision.STALE and sim.facts.status is S.PROCESSING


def test_terminal_absorbs_even_a_higher_ranked_status() -> None:
    smap = StatusMap.build("x", {"done": S.SUCCESS, "later": (S.PROCESSING, 1000)})
    sim = Sim(smap)
    sim.feed(event("done", provider="x"))
    assert sim.feed(event("later", provider="x", when=1)).decision is Decision.STALE


def test_a_terminal_callback_is_taken_even_if_an_answer_was_fetched_after_it() -> None:
    sim = Sim(GENERIC)
    sim.feed(event("PROCESSING", source="poll", when=20))
    assert sim.feed(event("SUCCESS", when=10)).decision is Decision.APPLIED


# --------------------------------------------------------------------------- what a refusal may touch


def test_a_refused_event_changes_nothing_but_the_poll_schedule() -> None:
    sim = Sim(FUSPAY)
    sim.feed(
        event(
            "event.sell.credited.fiat",
            provider="fuspay",
            fiat_amount="1000",
            details={"tx_hash": "0xfinal", "fiat_payment_status": "PAID"},
        )
    )
    facts = sim.facts
    for ev in (
        event("event.sell.received.crypto", provider="fuspay", when=5, details={"tx_hash": "0xold"}),
        event("event.sell.init", provider="fuspay", when=6, fiat_amount="999", kind="buy"),
        event("sell.event.close:odd", provider="fuspay", when=7, fiat_amount="5"),
    ):
        decided = sim.feed(ev)
        assert decided.decision in REFUSED
        assert set(decided.changes) <= SCHEDULE
    assert sim.facts == facts
    # A signed amount that disagrees is raised, never written.
    assert [[k for k, _ in p.anomalies] for p in sim.plans[1:]] == [
        [],
        ["amount_mismatch"],
        ["unknown_status", "amount_mismatch"],
    ]


def test_only_covered_fields_reach_the_order() -> None:
    sim = Sim(ALIXPAY)
    ipn = event(
        "AWAITING_PAYMENT",
        provider="alixpay",
        covers=("provider_status", "kind", "fiat_amount"),
        fiat_amount="1000",
        kind="sell",
        crypto_amount="5",
        provider_order_id="theirs",
        details={"tx_hash": "0xunsigned"},
    )
    assert sim.feed(ipn).decision is Decision.APPLIED
    assert (sim.facts.fiat_amount, sim.facts.kind) == ("1000", "sell")
    assert sim.facts.crypto_amount is None and sim.facts.provider_order_id is None
    assert sim.facts.details == {}
    answer = event(
        "AWAITING_PAYMENT",
        provider="alixpay",
        source="poll",
        when=5,
        crypto_amount="5",
        details={"tx_hash": "0xsigned", "account_number": "123"},
    )
    assert sim.feed(answer).decision is Decision.CONFIRMED
    assert sim.facts.crypto_amount == "5" and sim.facts.details == {"tx_hash": "0xsigned"}
    assert "account_number" not in KEPT_DETAILS


def test_a_status_nobody_vouches_for_is_only_recorded() -> None:
    sim = Sim(CHANGELLY)
    trigger = event(None, provider="changelly", covers=("provider_order_id",), claimed_status="complete")
    assert sim.feed(trigger).decision is Decision.RECORDED
    uncovered = event("complete", provider="changelly", covers=(), when=1)
    assert sim.feed(uncovered).decision is Decision.RECORDED
    undeclared = event("complete", provider="changelly", covers=None, when=2)
    assert sim.feed(undeclared).decision is Decision.RECORDED
    assert sim.facts == OrderFacts(next_poll_at=sim.facts.next_poll_at)


def test_a_creation_fills_blanks_and_a_second_one_is_a_duplicate() -> None:
    sim = Sim(GENERIC)
    first = sim.feed(event(None, source="create", crypto_amount="1", kind="sell"))
    assert first.decision is Decision.APPLIED and sim.facts.version == 1
    again = sim.feed(event(None, source="create", body="again", crypto_amount="2"))
    assert again.decision is Decision.DUPLICATE and sim.facts.crypto_amount == "1"


# --------------------------------------------------------------------------- replays


def test_a_replayed_callback_is_counted_on_its_record() -> None:
    sim = Sim(GENERIC)
    first = sim.feed(event("PROCESSING", body="same"))
    again = sim.feed(event("PROCESSING", body="same", when=50))
    assert first.replay_of is None and again.replay_of is not None
    assert again.decision is Decision.DUPLICATE and len(sim.history) == 1
    assert sim.history[0].at == at(0)  # a replay is old news: its first arrival stands


def test_a_replayed_hold_cannot_hold_a_resumed_order_again() -> None:
    sim = Sim(CHANGELLY)
    sim.feed(event("hold", provider="changelly", body="hold"))
    sim.feed(event("pending", source="poll", when=10, provider="changelly"))
    replay = sim.feed(event("hold", provider="changelly", body="hold", when=20))
    assert replay.replay_of is not None and sim.facts.status is S.PROCESSING


def test_the_same_answer_fetched_again_keeps_its_newest_fetch_and_can_lift_a_hold() -> None:
    sim = Sim(CHANGELLY)
    sim.feed(event("pending", source="poll", when=0, provider="changelly", body="pending"))
    sim.feed(event("pending", source="poll", when=5, provider="changelly", body="pending"))
    assert len(sim.history) == 1 and sim.history[0].at == at(5)
    sim.feed(event("hold", when=10, provider="changelly"))
    lifted = sim.feed(event("pending", source="poll", when=20, provider="changelly", body="pending"))
    assert lifted.decision is Decision.APPLIED and lifted.replay_of is None  # it moved: a row of its own
    assert sim.facts.status is S.PROCESSING


# --------------------------------------------------------------------------- properties


@st.composite
def lifecycles(draw: st.DrawFn, smap: StatusMap) -> list[str]:
    """A rank-increasing chain of the map's non-hold statuses (statuses of one rank in
    the order the map lists them, as the provider would send them), at most one
    terminal, last."""
    by_rank: dict[int, list[str]] = {}
    terminals = []
    for raw, e in smap.entries.items():
        if e.status in TERMINAL:
            terminals.append(raw)
        elif e.status is not S.ON_HOLD:
            by_rank.setdefault(e.rank, []).append(raw)
    ranks = draw(st.lists(st.sampled_from(sorted(by_rank)), unique=True).map(sorted))
    chain = []
    for r in ranks:
        same_rank = by_rank[r]
        chosen = draw(st.lists(st.sampled_from(same_rank), min_size=1, unique=True))
        chain += [raw for raw in same_rank if raw in chosen]
    end = draw(st.none() | st.sampled_from(terminals))
    if end is not None:
        chain.append(end)
    return chain


@st.composite
def histories(draw: st.DrawFn, smap: StatusMap) -> tuple[list[tuple[float, str]], list[Event]]:
    """A provider's consistent history (steps at t = 10, 20...; holds resume to the
    status held before) and what we observe of it: a callback per step arriving
    after a random delay (possibly after later steps), polls at random times
    reporting the status of that time, and exact duplicates of some of them."""
    chain = draw(lifecycles(smap))
    holds = [raw for raw, e in smap.entries.items() if e.status is S.ON_HOLD]
    steps: list[str] = []
    for i, raw in enumerate(chain):
        steps.append(raw)
        is_last = i == len(chain) - 1
        if holds and not (is_last and smap.lookup(raw).status in TERMINAL):  # type: ignore[union-attr]
            for _ in range(draw(st.integers(0, 2))):
                steps += [draw(st.sampled_from(holds)), raw]  # a hold, then a resume
    if holds and draw(st.booleans()):
        open_end = not steps or smap.lookup(steps[-1]).status not in TERMINAL  # type: ignore[union-attr]
        if open_end:
            steps.append(draw(st.sampled_from(holds)))  # still on hold at the end
    timeline = [(10.0 * (i + 1), raw) for i, raw in enumerate(steps)]
    end = 10.0 * (len(steps) + 2)

    def status_at(t: float) -> str | None:
        now = [raw for when, raw in timeline if when <= t]
        return now[-1] if now else None

    observed: list[Event] = []
    for i, (when, raw) in enumerate(timeline):
        if draw(st.booleans()) or smap.lookup(raw).status in TERMINAL:  # type: ignore[union-attr]
            delay = draw(st.floats(0, 40, allow_nan=False))
            observed.append(event(raw, when=when + delay, body=f"cb{i}:{raw}", provider=smap.provider))
    for drawn in draw(st.lists(st.floats(1, end, allow_nan=False), max_size=6)):
        # In milliseconds, as the event's timestamps hold them (a float a hair below a
        # step would otherwise read the step before yet be stamped at the step itself).
        t = round(drawn, 3)
        raw = status_at(t)
        if raw is not None:  # the same state reads the same: identical answers at other times
            observed.append(event(raw, source="poll", when=t, body=f"poll:{raw}", provider=smap.provider))
    if observed:
        observed += draw(st.lists(st.sampled_from(observed), max_size=5))  # exact duplicates
    return timeline, observed


def final(smap: StatusMap, events: list[Event]) -> Sim:
    sim = Sim(smap)
    for ev in events:
        sim.feed(ev)
    return sim


@pytest.mark.parametrize("provider", sorted(MAPS))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_arrival_order_of_callbacks_and_polls_ends_where_the_ordered_sequence_ends(
    provider: str, data: st.DataObject
) -> None:
    smap = MAPS[provider]
    timeline, observed = data.draw(histories(smap), label="history")
    ordered = final(smap, sorted(observed, key=lambda e: (e.observed, e.source, e.raw_body)))
    shuffled = final(smap, data.draw(st.permutations(observed), label="arrival"))
    assert shuffled.position == ordered.position
    assert shuffled.facts.status == ordered.facts.status
    for sim in (ordered, shuffled):
        decisions = [p.decision for p in sim.plans]
        assert Decision.CONFLICT not in decisions and Decision.UNKNOWN_STATUS not in decisions
        # Every move is one the table allows; a terminal state, once reached, stays.
        statuses = [S.CREATED, *(p.after for p in sim.plans)]
        for a, b in itertools.pairwise(statuses):
            assert a == b or b in TRANSITIONS[a]
            assert a not in TERMINAL or a == b
    # When the newest observation is an answer fetched after the provider's last step,
    # the order is at the provider's truth.
    newest = max(observed, key=lambda e: e.observed, default=None)
    if newest is not None and newest.source == "poll" and timeline and newest.observed >= at(timeline[-1][0]):
        truth = smap.lookup(timeline[-1][1])
        assert truth is not None
        assert shuffled.facts.status is truth.status, (timeline, shuffled.position)


@pytest.mark.parametrize("provider", sorted(MAPS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_callbacks_alone_in_any_order_with_duplicates_end_where_the_ordered_sequence_ends(
    provider: str, data: st.DataObject
) -> None:
    smap = MAPS[provider]
    chain = data.draw(lifecycles(smap), label="lifecycle")
    events = [event(raw, when=i, body=f"cb:{raw}", provider=provider) for i, raw in enumerate(chain)]
    ordered = final(smap, events)
    assert [p.decision for p in ordered.plans] == [Decision.APPLIED] * len(chain)
    if chain:
        last = smap.lookup(chain[-1])
        assert last is not None and ordered.facts.status is last.status
    extra = data.draw(st.lists(st.sampled_from(events), max_size=8) if events else st.just([]), label="dups")
    shuffled = final(smap, data.draw(st.permutations(events + extra), label="events"))
    assert shuffled.position == ordered.position
    assert shuffled.ranks == sorted(shuffled.ranks)  # callbacks never move an order backwards


@pytest.mark.parametrize("provider", sorted(MAPS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_arbitrary_events_never_leave_a_terminal_state(provider: str, data: st.DataObject) -> None:
    smap = MAPS[provider]
    raw = st.sampled_from([*sorted(smap.entries), "UNKNOWN_STATUS_X"])
    n = data.draw(st.integers(0, 25), label="n")
    events = [
        event(
            data.draw(raw, label=f"status{i}"),
            source=data.draw(st.sampled_from(["callback", "poll"]), label=f"source{i}"),
            when=data.draw(st.floats(0, 100, allow_nan=False), label=f"when{i}"),
            body=f"e{i}",
            provider=provider,
        )
        for i in range(n)
    ]
    sim = final(smap, events)
    statuses = [S.CREATED, *(p.after for p in sim.plans)]
    for i, (a, b) in enumerate(itertools.pairwise(statuses)):
        if a in TERMINAL:
            assert b == a and sim.plans[i].decision is not Decision.APPLIED
        if a != b:
            assert b in TRANSITIONS[a]
        incoming = smap.lookup(events[i].provider_status)
        if incoming is None:
            assert sim.plans[i].decision is Decision.UNKNOWN_STATUS
        elif a in TERMINAL and incoming.status in TERMINAL and incoming.status is not a:
            assert sim.plans[i].decision is Decision.CONFLICT


def test_resolve_reads_a_set() -> None:
    obs = [
        Observation("callback", "pending", "k1", "f1", "applied", at(0)),
        Observation("callback", "hold", "k2", "f2", "applied", at(10)),
        Observation("poll", "pending", "k1", "f3", "applied", at(20)),
    ]
    for perm in itertools.permutations(obs):
        assert resolve(perm, CHANGELLY) == Position(S.PROCESSING, 30, "pending")
    assert resolve(obs[:2], CHANGELLY) == Position(S.ON_HOLD, 35, "hold")
    assert resolve([], CHANGELLY) is None


def test_a_refused_creation_ends_the_order_and_later_events_are_absorbed() -> None:
    sim = Sim(GENERIC)
    sim.feed(event(None, source="create"))
    refused = event(
        None, source="create", body="refused", creation="refused", details={"creation": "refused"}
    )
    decided = sim.feed(refused)
    assert decided.decision is Decision.APPLIED and sim.facts.status is S.FAILED
    assert decided.changes["next_poll_at"] is None and sim.facts.details == {"creation": "refused"}
    assert sim.feed(event("PROCESSING", when=5)).decision is Decision.STALE
    assert sim.feed(event("SUCCESS", when=6)).decision is Decision.CONFLICT
    # A refusal recorded after the order finished otherwise is a conflict for operators.
    done = standing_at(S.SUCCESS)
    late = done.feed(event(None, source="create", body="refused late", creation="refused"))
    assert late.decision is Decision.CONFLICT and [k for k, _ in late.anomalies] == ["conflict"]
    assert done.facts.status is S.SUCCESS


def test_a_creation_outcome_belongs_to_a_create_event() -> None:
    from orders.errors import BadEventPayload

    with pytest.raises(BadEventPayload):
        event(None, source="callback", creation="refused")
    with pytest.raises(BadEventPayload):
        event(None, source="create", creation="maybe")
