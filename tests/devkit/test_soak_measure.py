"""The soak's score can fail: a lost callback, an order behind the truth, an exited process.

``make soak`` itself takes minutes; this pins its measures on the suite's stack: an
accepted callback with no record in the store is counted lost, an order whose stored
status differs from its truth is behind for as long as it differs, and the report is
not ok when anything is wrong.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from conftest import Stack
from scenarios import alixpay_sell

from devkit.soak.measure import Lag, Report, lost_callbacks
from devkit.soak.traffic import expected
from orders.service import create_order


@dataclass
class Delivered:
    """A sandbox as the measures see it: what it POSTed and the answers."""

    deliveries: list[tuple[str, str, int | str]]


def test_a_callback_answered_200_without_a_record_is_lost(stack: Stack) -> None:
    create_order(stack.runtime.store, stack.runtime.adapters["alixpay"], alixpay_sell("m-1"))
    stack.sandbox.advance("m-1", "SUCCESS")
    assert stack.sandbox.wait_idle(10)
    stack.drain()
    engine = stack.runtime.store.engine
    assert lost_callbacks(engine, {"alixpay": stack.sandbox}) == set()
    claimed = Delivered([*stack.sandbox.deliveries, ("m-1", "FAIL", 200), ("m-1", "ERROR", 503)])
    assert lost_callbacks(engine, {"alixpay": claimed}) == {("alixpay", "m-1", "FAIL")}


def test_an_order_is_behind_for_as_long_as_it_differs_from_its_truth(stack: Stack) -> None:
    create_order(stack.runtime.store, stack.runtime.adapters["alixpay"], alixpay_sell("m-2"))
    truth = {"m-2": expected("alixpay", "AWAITING_PAYMENT")}
    lag = Lag(stack.runtime.store.engine, lambda: dict(truth))
    assert lag.sample() == {"m-2": True}
    truth["m-2"] = expected("alixpay", "SUCCESS")
    assert lag.sample() == {"m-2": False}
    time.sleep(0.3)
    assert lag.sample() == {"m-2": False}
    assert lag.longest >= 0.3 and lag.longest_order == "m-2"


def test_the_report_is_ok_only_when_nothing_is_wrong() -> None:
    good = dict(
        seconds=1.0,
        sent=3,
        accepted=3,
        refused=0,
        dropped=0,
        applied=3,
        faults=["a fault"],
        converged=2,
        orders=2,
        refused_creations=0,
        lost=0,
        longest_behind=1.0,
    )
    assert Report(**good).ok  # type: ignore[arg-type]
    assert "| events lost (accepted, never recorded)" in Report(**good).table()  # type: ignore[arg-type]
    assert not Report(**{**good, "lost": 1}).ok  # type: ignore[arg-type]
    assert not Report(**{**good, "converged": 1}).ok  # type: ignore[arg-type]
    assert not Report(**good, exited=["worker-1 (exit 1)"]).ok  # type: ignore[arg-type]
