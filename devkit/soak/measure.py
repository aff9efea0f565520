"""What the soak measures, read from the sandboxes and the store, never from rampwatch's logs.

* ``Lag``: a thread that compares, twice a second, every order's stored status with the
  status its sandbox's truth maps to, and keeps the longest time an order was behind.
* ``lost_callbacks``: every callback a sandbox saw answered 200 must have its record in
  the store (an accepted callback lives only in Redis until a worker applies it).
* ``Report``: the one table ``make soak`` prints.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Engine, text

from devkit.kit import SandboxKit

Truth = Callable[[], dict[str, str | None]]


def stored(engine: Engine) -> dict[str, str]:
    """Every order's stored canonical status, by external order id."""
    with engine.connect() as conn:
        return {row[0]: row[1] for row in conn.execute(text("SELECT external_order_id, status FROM orders"))}


class Lag:
    """The longest time an order's stored status differed from its truth."""

    def __init__(self, engine: Engine, truth: Truth, every: float = 0.5):
        self.engine = engine
        self.truth = truth
        self.every = every
        self.longest = 0.0
        self.longest_order = ""
        self._behind: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-lag", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def sample(self) -> dict[str, bool]:
        """One comparison (order id -> at the truth), updating the longest lag."""
        truth = self.truth()
        try:
            have = stored(self.engine)
        except Exception:
            return {}  # the database is stalled: the next sample sees it
        now = time.monotonic()
        at_truth = {}
        for oid, want in truth.items():
            at = have.get(oid) == want
            at_truth[oid] = at
            if at:
                self._behind.pop(oid, None)
            else:
                since = self._behind.setdefault(oid, now)
                if now - since > self.longest:
                    self.longest, self.longest_order = now - since, oid
        return at_truth

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()


def accepted(sandboxes: Mapping[str, SandboxKit]) -> set[tuple[str, str, str]]:
    """(provider, order id, status) of every callback a sandbox saw answered 200."""
    return {(p, d[0], d[1]) for p, s in sandboxes.items() for d in s.deliveries if d[2] == 200}


def lost_callbacks(engine: Engine, sandboxes: Mapping[str, SandboxKit]) -> set[tuple[str, str, str]]:
    """Accepted callbacks the store has no record of (a callback the provider only
    triggers a poll with is recorded with its status as claimed)."""
    query = text(
        "SELECT o.provider, o.external_order_id, COALESCE(e.provider_status, e.claimed_status) "
        "FROM events e JOIN orders o ON o.id = e.order_id WHERE e.source = 'callback'"
    )
    with engine.connect() as conn:
        recorded = {(row[0], row[1], row[2]) for row in conn.execute(query)}
    return accepted(sandboxes) - recorded


def applied_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM events WHERE decision = 'applied'")).scalar_one())


@dataclass
class Report:
    seconds: float
    sent: int
    accepted: int
    refused: int
    dropped: int
    applied: int
    faults: list[str]
    converged: int
    orders: int
    refused_creations: int
    lost: int
    longest_behind: float
    longest_order: str = ""
    exited: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.converged == self.orders and not self.exited

    def table(self) -> str:
        rows = [
            (
                "orders created through the API",
                f"{self.orders} ({self.refused_creations} refused during faults)",
            ),
            ("callbacks dropped by the sandboxes (never sent)", str(self.dropped)),
            ("callbacks sent", str(self.sent)),
            ("callbacks accepted (200)", str(self.accepted)),
            ("callbacks refused (non-200, e.g. 503 while Redis was down)", str(self.refused)),
            ("events applied", str(self.applied)),
            ("faults injected", str(len(self.faults))),
            ("orders converged to the sandbox's truth", f"{self.converged}/{self.orders}"),
            ("events lost (accepted, never recorded)", str(self.lost)),
            (
                "longest time an order was behind the truth",
                f"{self.longest_behind:.1f} s ({self.longest_order})",
            ),
            ("processes that exited on their own", str(len(self.exited))),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
        return "\n".join(lines)
