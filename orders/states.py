"""Canonical order states, the transition table and the pure ``decide`` function.

The state machine is data plus one function:

* ``TRANSITIONS`` says which canonical state may follow which. Terminal states
  have no exits. ``ON_HOLD`` may be entered from and left to any non-terminal state.
* Every provider status maps to a canonical state and a *rank* (its place in the
  provider's lifecycle, see ``StatusMap``). An event is applied only when the
  table allows the move *and* its rank is above the order's: forward only, and a
  step may skip states (a lost ``init`` must not block ``received.crypto``).
  Because the decision depends only on ranks, any permutation or duplication of
  an order's events ends where the ordered sequence ends.
* Leaving ``ON_HOLD`` for a lower-ranked state (the provider resumed the order),
  and entering a hold again after such a resume, are accepted only from a
  ``poll``: a poll reports the provider's present, while a callback may be an
  old one arriving late.

``decide`` never touches the database; ``orders.store.apply`` is its only caller
that writes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class Status(enum.StrEnum):
    CREATED = "CREATED"
    AWAITING_PAYMENT = "AWAITING_PAYMENT"
    PAYMENT_RECEIVED = "PAYMENT_RECEIVED"
    PROCESSING = "PROCESSING"
    ON_HOLD = "ON_HOLD"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"
    EXPIRED = "EXPIRED"


TERMINAL: frozenset[Status] = frozenset({Status.SUCCESS, Status.FAILED, Status.REFUNDED, Status.EXPIRED})
NON_TERMINAL: frozenset[Status] = frozenset(Status) - TERMINAL

# Default lifecycle ranks; a provider's status map may place its statuses elsewhere
# (ON_HOLD in particular, whose place depends on the provider's flow).
RANK: Mapping[Status, int] = {
    Status.CREATED: 0,
    Status.AWAITING_PAYMENT: 10,
    Status.PAYMENT_RECEIVED: 20,
    Status.PROCESSING: 30,
    Status.ON_HOLD: 35,
    Status.SUCCESS: 100,
    Status.FAILED: 100,
    Status.REFUNDED: 100,
    Status.EXPIRED: 100,
}


def _forward_from(state: Status) -> frozenset[Status]:
    """Every state of a higher default rank, ON_HOLD, and every terminal state."""
    return frozenset(
        s
        for s in Status
        if s is not state and (s in TERMINAL or s is Status.ON_HOLD or RANK[s] > RANK[state])
    )


TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    Status.CREATED: _forward_from(Status.CREATED),
    Status.AWAITING_PAYMENT: _forward_from(Status.AWAITING_PAYMENT),
    Status.PAYMENT_RECEIVED: _forward_from(Status.PAYMENT_RECEIVED),
    Status.PROCESSING: _forward_from(Status.PROCESSING),
    # ON_HOLD can resume to any non-terminal state, or end.
    Status.ON_HOLD: frozenset(s for s in Status if s is not Status.ON_HOLD and s is not Status.CREATED),
    Status.SUCCESS: frozenset(),
    Status.FAILED: frozenset(),
    Status.REFUNDED: frozenset(),
    Status.EXPIRED: frozenset(),
}


class Decision(enum.StrEnum):
    APPLIED = "applied"  # state, version and provider status written
    STALE = "stale"  # older than what the order already reached; recorded only
    DUPLICATE = "duplicate"  # same dedup key already applied; recorded only
    CONFLICT = "conflict"  # a different terminal state after a terminal one; anomaly
    UNKNOWN_STATUS = "unknown_status"  # provider status not in the map; anomaly
    RECORDED = "recorded"  # carries no status (a callback that only triggers a poll); kept


@dataclass(frozen=True)
class Mapped:
    """A provider status placed in the canonical lifecycle."""

    status: Status
    rank: int


@dataclass(frozen=True)
class StatusMap:
    """One provider's statuses as data: provider status -> (canonical, rank)."""

    provider: str
    entries: Mapping[str, Mapped]

    @classmethod
    def build(cls, provider: str, table: Mapping[str, Status | tuple[Status, int]]) -> StatusMap:
        entries = {}
        for raw, target in table.items():
            if isinstance(target, tuple):
                entries[raw] = Mapped(target[0], target[1])
            else:
                entries[raw] = Mapped(target, RANK[target])
        return cls(provider, entries)

    def lookup(self, provider_status: str | None) -> Mapped | None:
        if provider_status is None:
            return None
        return self.entries.get(provider_status)


@dataclass(frozen=True)
class OrderPosition:
    """What ``decide`` needs to know about an order: its state and rank."""

    status: Status
    rank: int


def decide(
    current: OrderPosition,
    incoming: Mapped | None,
    *,
    already_applied: bool = False,
    source: str = "callback",
) -> Decision:
    """Decide what an event does to an order. Pure: no I/O, no clock.

    ``incoming`` is None when the provider status is not in the status map.
    ``already_applied`` is True when an event with the same dedup key was applied.
    """
    if incoming is None:
        return Decision.UNKNOWN_STATUS
    target = incoming.status
    if current.status in TERMINAL:
        if target in TERMINAL and target is not current.status:
            return Decision.CONFLICT
        return Decision.DUPLICATE if already_applied else Decision.STALE
    allowed = target in TRANSITIONS[current.status]
    if source == "poll" and allowed:
        # A poll reports the provider's present, not an old message: it may leave a
        # hold for any state, and enter a hold again after a resume (its dedup key
        # was applied before, the first time round).
        if current.status is Status.ON_HOLD and target is not Status.CREATED:
            return Decision.APPLIED
        if target is Status.ON_HOLD and incoming.rank > current.rank:
            return Decision.APPLIED
    if already_applied:
        return Decision.DUPLICATE
    if allowed and incoming.rank > current.rank:
        return Decision.APPLIED
    return Decision.STALE


def reachable(start: Status = Status.CREATED) -> frozenset[Status]:
    """Every state reachable from ``start`` through ``TRANSITIONS``."""
    seen = {start}
    todo = [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return frozenset(seen)
