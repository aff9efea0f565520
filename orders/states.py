"""Canonical order states, the transition table and each provider's status map.

The state machine is data:

* ``TRANSITIONS`` says which canonical state may follow which. Terminal states
  have no exits. ``ON_HOLD`` may be entered from and left to any non-terminal state.
* Every provider status maps to a canonical state and a *rank* (its place in the
  provider's lifecycle, see ``StatusMap``): an order moves forward by rank only,
  and a step may skip states (a lost ``init`` must not block ``received.crypto``).
* ``Decision`` names what an event did to an order.

What one event does to one order is decided by ``orders.plan`` (pure), from
these tables and what the order has seen; ``orders.store`` writes it.
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
    APPLIED = "applied"  # moved the order: state, version and the fields it covers written
    CONFIRMED = "confirmed"  # the newest verified answer found the order where it is
    STALE = "stale"  # older than what the order already reached; recorded only
    DUPLICATE = "duplicate"  # the same status (or the same delivery) again; recorded only
    CONFLICT = "conflict"  # a different terminal state after a terminal one; anomaly
    UNKNOWN_STATUS = "unknown_status"  # provider status not in the map; anomaly
    RECORDED = "recorded"  # carries no status anybody vouches for (a trigger); kept


REFUSED: frozenset[Decision] = frozenset(
    {Decision.STALE, Decision.DUPLICATE, Decision.CONFLICT, Decision.UNKNOWN_STATUS, Decision.RECORDED}
)


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
