"""What one event does to one order, decided before anything is written. Pure: no I/O, no clock.

``plan`` takes the order as it stands (``OrderFacts``), what the order has seen
so far (its history as ``Observation``s) and one ``Event``, and returns a
``Plan``: the decision, the order columns to write, the anomalies to raise and
how to record the event. ``orders.store.Store.apply`` locks the row, calls it
and writes the result; it decides nothing itself.

**Where an open order stands is a function of everything it has seen**
(``resolve``), not of the order in which the events arrived:

* a terminal status, once seen, is where the order ends (the first one taken
  stays; a different terminal later is a ``conflict`` for operators);
* otherwise the order is at the highest-ranked status it has seen (forward
  only; of two statuses of one rank, the one the status map lists later, so
  the choice does not depend on which arrived first), unless it is on hold;
* it is on hold when its newest hold was not followed by a *later* resume. A
  resume is a verified answer (poll) reporting a status that is not a hold, or
  any event ranked above the hold. "Later" compares when each was observed: a
  callback when it first arrived, an answer when its request was sent. So an
  answer fetched before a hold cannot lift it, and a hold that arrives before
  a newer answer cannot outlive it.

Because ``resolve`` reads a set, any permutation or duplication of an order's
events ends where the ordered sequence ends (a property test proves it).

**Only an applied event (or a creation) changes the order.** An event is
``applied`` when it moves where the order stands; a verified answer that finds
the order where it already is, and is the newest thing the order has seen, is
``confirmed`` and may refresh what the answer covers. Everything else (stale,
duplicate, conflict, unknown status, a trigger) is recorded with its decision
and changes nothing else. Of an applied event only the fields its signature or
verified answer covers (``Event.covers``) are written: amounts and ids fill
blanks (a different amount is an ``amount_mismatch``, never an overwrite),
details are refreshed.

**Replays are counted, not stored again**: an event whose fingerprint the order
has already recorded is counted on that record (``replay_of``), unless it is
an answer whose newer fetch time moves the order (a resume seen twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from orders.events import ANSWER_SOURCES, Event
from orders.states import RANK, TERMINAL, Decision, Mapped, Status, StatusMap

# Details worth keeping on the order row; personal data (bank accounts, e-mails,
# phones) stays in the raw bodies of the event history only.
KEPT_DETAILS = frozenset(
    {
        "tx_hash",
        "wallet_address",
        "network",
        "description",
        "expires_at",
        "provider_created_at",
        "paid_amount",
        "redirect_url",
        "fiat_payment_status",
        "crypto_payment_status",
        "payout_status",
        "kyc_error_type",
        "creation",  # "refused" or "unconfirmed": how our creation request ended
        "creation_error",
    }
)
BLANK_FILLED = ("provider_order_id", "kind", "fiat_currency", "crypto_amount", "crypto_currency")


class AnomalyKind:
    AMOUNT_MISMATCH = "amount_mismatch"
    CONFLICT = "conflict"
    UNKNOWN_STATUS = "unknown_status"
    STALE = "stale"


@dataclass(frozen=True)
class Observation:
    """One recorded event as the plan sees it."""

    source: str
    provider_status: str | None
    dedup_key: str
    fingerprint: str
    decision: str
    at: datetime  # when observed: a callback's first arrival, an answer's (latest) fetch
    record_id: int | None = None

    @property
    def is_answer(self) -> bool:
        return self.source in ANSWER_SOURCES


@dataclass(frozen=True)
class Position:
    """Where an order stands."""

    status: Status
    rank: int
    provider_status: str | None


# What a refused creation ends the order at.
CREATION_REFUSED = Position(Status.FAILED, RANK[Status.FAILED], None)


@dataclass(frozen=True)
class OrderFacts:
    """The order row as the plan needs it (a new order: ``OrderFacts.new()``)."""

    status: Status = Status.CREATED
    rank: int = 0
    provider_status: str | None = None
    version: int = 0
    provider_order_id: str | None = None
    kind: str | None = None
    fiat_amount: str | None = None
    fiat_currency: str | None = None
    crypto_amount: str | None = None
    crypto_currency: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    poll_attempts: int = 0
    next_poll_at: datetime | None = None

    @property
    def position(self) -> Position:
        return Position(self.status, self.rank, self.provider_status)


@dataclass(frozen=True)
class Plan:
    decision: Decision
    changes: Mapping[str, Any]  # order columns to write
    anomalies: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    replay_of: Observation | None = None  # counted on this record; no new row
    record_key: str = ""  # the dedup key to record the event under
    canonical_status: str | None = None  # what the event's status maps to
    before: Status = Status.CREATED
    after: Status = Status.CREATED
    version: int = 0

    @property
    def changed(self) -> bool:
        """The canonical status changed."""
        return self.before is not self.after


@dataclass(frozen=True)
class PollPolicyLike:
    """What the plan needs of a provider's poll policy (``config.PollPolicy`` fits)."""

    backoff: tuple[int, ...]

    def delay(self, attempt: int) -> int:
        return self.backoff[min(max(attempt, 0), len(self.backoff) - 1)]


# ---------------------------------------------------------------- resolve


def _known(observations: Iterable[Observation], smap: StatusMap) -> list[tuple[Observation, Mapped]]:
    out = []
    for o in observations:
        mapped = smap.lookup(o.provider_status)
        if mapped is not None:
            out.append((o, mapped))
    return out


def resolve(observations: Iterable[Observation], smap: StatusMap) -> Position | None:
    """Where an order stands after seeing ``observations`` (None: no known status yet).

    A function of the set: the order of ``observations`` does not matter."""
    known = _known(observations, smap)
    ends = [(o, m) for o, m in known if m.status in TERMINAL]
    if ends:
        o, m = min(ends, key=lambda om: (om[0].at, om[0].provider_status or ""))
        return Position(m.status, m.rank, o.provider_status)
    holds = [(o, m) for o, m in known if m.status is Status.ON_HOLD]
    progress = [(o, m) for o, m in known if m.status is not Status.ON_HOLD]
    if holds:
        hold, hold_map = max(holds, key=lambda om: (om[0].at, om[1].rank, om[0].provider_status or ""))
        resumed = any(o.at > hold.at and (o.is_answer or m.rank > hold_map.rank) for o, m in progress)
        if not resumed:
            return Position(hold_map.status, hold_map.rank, hold.provider_status)
    if not progress:
        return None
    listed = {raw: i for i, raw in enumerate(smap.entries)}
    o, m = max(progress, key=lambda om: (om[1].rank, listed[om[0].provider_status or ""]))
    return Position(m.status, m.rank, o.provider_status)


# ---------------------------------------------------------------- plan


def observation_of(event: Event, fingerprint: str, decision: str = "") -> Observation:
    return Observation(
        source=event.source,
        provider_status=event.provider_status if event.covered("provider_status") else None,
        dedup_key=event.dedup_key,
        fingerprint=fingerprint,
        decision=decision,
        at=event.observed,
    )


def plan(
    order: OrderFacts,
    history: Sequence[Observation],
    event: Event,
    smap: StatusMap,
    policy: PollPolicyLike,
    now: datetime,
) -> Plan:
    """Decide what ``event`` does to ``order`` (which has seen ``history``)."""
    fingerprint = event.fingerprint()
    applied_keys = {o.dedup_key for o in history if o.decision == Decision.APPLIED.value}
    current = order.status
    status = event.provider_status if event.covered("provider_status") else None
    mapped = smap.lookup(status) if status is not None else None
    seen = _latest(o for o in history if o.fingerprint == fingerprint)
    if seen is not None and event.source not in ANSWER_SOURCES:
        # The same delivery again (a provider retry, or a captured callback replayed):
        # it says nothing new, whenever it arrives. Counted on its record.
        return _replay(order, seen, event, Decision.DUPLICATE, policy, now)
    incoming = observation_of(event, fingerprint)
    anomalies: list[tuple[str, Mapping[str, Any]]] = []
    moved: Position | None = None

    if status is None and event.creation == "refused":
        # The provider refused our creation request: the order ends here, with its reason.
        if current is CREATION_REFUSED.status:
            decision = Decision.DUPLICATE
        elif current in TERMINAL:
            decision = Decision.CONFLICT
            anomalies.append(
                (AnomalyKind.CONFLICT, {"status": current.value, "incoming": "FAILED", "creation": "refused"})
            )
        else:
            decision, moved = Decision.APPLIED, CREATION_REFUSED
    elif status is None:
        if event.source == "callback" or event.provider_status is not None:
            # A trigger (its signature covers no status), or a status nobody vouches for.
            decision = Decision.RECORDED
        else:  # our own creation request, or the provider's answer to it without a status
            decision = Decision.DUPLICATE if event.dedup_key in applied_keys else Decision.APPLIED
    elif mapped is None:
        decision = Decision.UNKNOWN_STATUS
        # One anomaly per status the order was seen in and the map does not know (a
        # replay of that event, or the same status in another delivery, raises none).
        if not any(o.provider_status == status for o in history):
            anomalies.append((AnomalyKind.UNKNOWN_STATUS, {"provider_status": status}))
    elif current in TERMINAL:
        if mapped.status in TERMINAL and mapped.status is not current:
            decision = Decision.CONFLICT
            if seen is None:
                anomalies.append(
                    (
                        AnomalyKind.CONFLICT,
                        {"status": current.value, "incoming": mapped.status.value, "provider_status": status},
                    )
                )
        else:
            decision = Decision.DUPLICATE if event.dedup_key in applied_keys else Decision.STALE
    else:
        before = resolve(history, smap)
        after = resolve([*history, incoming], smap)
        # A replay repairs: the order moves to where its whole history now resolves,
        # even when that history already held the event (one whose status the map did
        # not know when it arrived, and knows since). Anything else moves the order only
        # when it changes what the history resolves to.
        moves = after != order.position if event.source == "replay" else after != before
        if after is not None and moves and after != order.position:
            decision, moved = Decision.APPLIED, after
        elif (
            event.source in ANSWER_SOURCES
            and status == order.provider_status
            and all(o.at <= incoming.at for o in history)
        ):
            decision = Decision.CONFIRMED
        elif event.dedup_key in applied_keys:
            decision = Decision.DUPLICATE
        else:
            decision = Decision.STALE

    if seen is not None and moved is None:
        # The same answer again, which moves nothing: counted on its record (its
        # newer fetch time kept), and it still counts as a poll for the schedule.
        return _replay(order, seen, event, decision, policy, now)

    changes: dict[str, Any] = {}
    takes_fields = decision in (Decision.APPLIED, Decision.CONFIRMED)
    if takes_fields:
        changes.update(_covered_fields(order, event, anomalies))
    elif event.covered("fiat_amount") and event.fiat_amount is not None and order.fiat_amount is not None:
        if Decimal(order.fiat_amount) != Decimal(event.fiat_amount):
            # A signed amount that disagrees: raised, and kept on the event only.
            anomalies.append(
                (AnomalyKind.AMOUNT_MISMATCH, {"order": order.fiat_amount, "event": event.fiat_amount})
            )

    version = order.version
    if moved is not None:
        changes.update(status=moved.status.value, rank=moved.rank, provider_status=moved.provider_status)
        changes.update(poll_attempts=0, updated_at=now)
        if moved.status in TERMINAL:
            changes.update(terminal_at=now, next_poll_at=None)
        else:
            changes["next_poll_at"] = now + timedelta(seconds=policy.delay(0))
        version += 1
    elif decision is Decision.APPLIED or (decision is Decision.CONFIRMED and changes):
        version += 1
        changes["updated_at"] = now
    if version != order.version:
        changes["version"] = version
    after_status = moved.status if moved is not None else current
    changes.update(_poll_schedule(order, event, after_status, moved is not None, policy, now))

    record_key = event.dedup_key
    if decision is Decision.APPLIED and record_key in applied_keys:
        # An answer resuming a held order reports a status applied before the hold:
        # record it under its own key so "one applied event per key" still holds.
        record_key = f"{event.dedup_key}@v{version}"
    return Plan(
        decision=decision,
        changes=changes,
        anomalies=tuple(anomalies),
        record_key=record_key,
        canonical_status=mapped.status.value if mapped is not None else None,
        before=current,
        after=after_status,
        version=version,
    )


def _latest(observations: Iterable[Observation]) -> Observation | None:
    """The last of ``observations`` (history is in recording order)."""
    found = None
    for found in observations:  # noqa: B007
        pass
    return found


def _replay(
    order: OrderFacts,
    seen: Observation,
    event: Event,
    decision: Decision,
    policy: PollPolicyLike,
    now: datetime,
) -> Plan:
    changes = _poll_schedule(order, event, order.status, False, policy, now)
    replayed = Decision.DUPLICATE if decision in (Decision.CONFIRMED, Decision.APPLIED) else decision
    return Plan(
        decision=replayed,
        changes=changes,
        replay_of=seen,
        record_key=seen.dedup_key,
        before=order.status,
        after=order.status,
        version=order.version,
    )


def _covered_fields(
    order: OrderFacts, event: Event, anomalies: list[tuple[str, Mapping[str, Any]]]
) -> dict[str, Any]:
    """The order columns an applied (or confirming) event may write: what it covers."""
    changes: dict[str, Any] = {}
    if event.covered("fiat_amount") and event.fiat_amount is not None:
        if order.fiat_amount is None:
            changes["fiat_amount"] = event.fiat_amount
        elif Decimal(order.fiat_amount) != Decimal(event.fiat_amount):
            anomalies.append(
                (AnomalyKind.AMOUNT_MISMATCH, {"order": order.fiat_amount, "event": event.fiat_amount})
            )
    for name in BLANK_FILLED:
        value = getattr(event, name)
        if event.covered(name) and value is not None and getattr(order, name) is None:
            changes[name] = value
    if event.covered("details"):
        kept = {k: v for k, v in event.details.items() if k in KEPT_DETAILS and v not in (None, "")}
        merged = {**order.details, **kept}
        if event.provider_status is not None and merged.get("creation") == "unconfirmed":
            # The provider knows the order after all: our request did create it.
            merged = {k: v for k, v in merged.items() if k not in ("creation", "creation_error")}
        if merged != dict(order.details):
            changes["details"] = merged
    return changes


def _poll_schedule(
    order: OrderFacts, event: Event, status: Status, moved: bool, policy: PollPolicyLike, now: datetime
) -> dict[str, Any]:
    """A poll (whatever it found) is a poll: its time, and the backoff when nothing moved."""
    changes: dict[str, Any] = {}
    if event.source == "poll":
        changes["last_polled_at"] = now
        if not moved and status not in TERMINAL:
            attempts = order.poll_attempts + 1
            changes["poll_attempts"] = attempts
            changes["next_poll_at"] = now + timedelta(seconds=policy.delay(attempts))
    if status not in TERMINAL and order.next_poll_at is None and "next_poll_at" not in changes:
        changes["next_poll_at"] = now
    return changes


def remember(history: Sequence[Observation], event: Event, decided: Plan) -> list[Observation]:
    """``history`` once ``event`` is recorded as ``decided``: one more observation, or,
    for a replay, its record's (an answer fetched again is newer evidence of the same
    state, so its record keeps the latest fetch; a callback keeps its first arrival)."""
    seen = decided.replay_of
    if seen is None:
        return [
            *history,
            replace(
                observation_of(event, event.fingerprint(), decided.decision.value),
                dedup_key=decided.record_key,
            ),
        ]
    if seen.is_answer and event.observed > seen.at:
        return [replace(o, at=event.observed) if o is seen else o for o in history]
    return list(history)


def facts_with(order: OrderFacts, changes: Mapping[str, Any]) -> OrderFacts:
    """``order`` after ``changes`` (for planning the next event of a batch)."""
    known = {k: v for k, v in changes.items() if k in OrderFacts.__dataclass_fields__}
    if "status" in known:
        known["status"] = Status(known["status"])
    return replace(order, **known)
