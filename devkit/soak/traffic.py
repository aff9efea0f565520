"""The soak's traffic: orders created through rampwatch's API, moved by their sandboxes.

Each order follows one of its provider's lifecycles (``PLANS``), one step every one to
four seconds, with its own callback switches: some duplicated, some delayed, some held
and delivered newest first (``reorder``, flushed every few seconds); every sandbox also
drops a share of all callbacks (seeded). ``expected`` is the canonical status a
sandbox's present truth maps to: what the store must reach. This module owns the plans,
the orders created and the thread that plays their steps.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from devkit.alixpay.demo import sell_request as alix_request
from devkit.kit import SandboxKit
from orders.providers import STATUS_MAPS

log = logging.getLogger("rampwatch.soak")

Step = tuple[str, dict[str, Any]]  # (status or event, extra arguments of advance)

CREDITED = ("event.sell.credited.fiat", {"payout_status": "SUCCESSFUL"})
PLANS: Mapping[str, list[list[Step]]] = {
    "alixpay": [
        [("PAYMENT_COMPLETED", {}), ("PROCESSING_TOKEN_TRANSFER", {}), ("SUCCESS", {})],
        [("PAYMENT_COMPLETED", {}), ("SUCCESS", {})],
        [("PAYMENT_COMPLETED", {}), ("FAIL", {})],
    ],
    "fuspay": [
        [("event.sell.received.crypto", {}), CREDITED],
        [("event.sell.received.crypto", {}), ("event.sell.received.fiat_kyc_error", {}), CREDITED],
        [("event.sell.error", {})],
    ],
    "changelly": [
        [("pending", {}), ("complete", {})],
        [("pending", {}), ("hold", {}), ("pending", {}), ("complete", {})],
        [("pending", {}), ("failed", {})],
    ],
}
DROP_RATE = 0.15


def fuspay_request(order_id: str) -> dict[str, Any]:
    return {
        "partner_order_id": order_id,
        "chain": "usdt-trc20",
        "crypto_amount": "100",
        "fiat_currency_to_receive": "NGN",
        "seller_phone": "+2348000000000",
        "seller_email": "seller@example.com",
        "first_name": "Ada",
        "last_name": "Obi",
        "account_name": "Ada Obi",
        "account_number": "0123456789",
        "account_code": "090405",
        "intrapay_merchant_id": "m-soak",
        "markup_fee": "1",
        "refund_wallet_address": "TXLYE1yx8LyXfTY1utnXEm7DtzWsgvYBWB",
    }


def changelly_request(order_id: str) -> dict[str, Any]:
    return {
        "externalOrderId": order_id,
        "externalUserId": "soak-user",
        "providerCode": "moonpay",
        "currencyFrom": "BTC",
        "currencyTo": "EUR",
        "amountFrom": "0.01",
        "country": "DE",
    }


REQUESTS: Mapping[str, Callable[[str], dict[str, Any]]] = {
    "alixpay": alix_request,
    "fuspay": fuspay_request,
    "changelly": changelly_request,
}


def expected(provider: str, truth: str | None) -> str | None:
    """The canonical status the store must show for a sandbox's ``truth`` (None: unknown)."""
    mapped = STATUS_MAPS[provider].lookup(truth)
    return None if mapped is None else mapped.status.value


@dataclass
class Traffic:
    """Orders created and stepped through their lifecycles (see the module docstring)."""

    base: str
    token: str
    sandboxes: Mapping[str, SandboxKit]
    seed: int = 7
    orders: dict[str, str] = field(default_factory=dict)  # order id -> provider
    refused_creations: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._steps: list[tuple[float, int, str, str, Step]] = []
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="soak-steps", daemon=True)
        for sandbox in self.sandboxes.values():
            sandbox.set_switches(drop_rate=DROP_RATE, seed=self.seed)

    def start(self) -> None:
        self._thread.start()

    def create_one(self) -> str | None:
        """Create the next order (providers in turn) and schedule its steps; its id."""
        provider = sorted(self.sandboxes)[self._count % len(self.sandboxes)]
        self._count += 1
        order_id = f"soak-{provider[:3]}-{self._count:04}"
        headers = {"Authorization": f"Bearer {self.token}"}
        request = REQUESTS[provider](order_id)
        try:
            resp = requests.post(
                f"{self.base}/api/orders/{provider}", json=request, headers=headers, timeout=15
            )
        except requests.RequestException:
            resp = None
        if resp is None or resp.status_code != 201:
            # Refused during a fault (a provider answering 429, a stalled database): the
            # partner would try again with a new order; this one is not followed.
            self.refused_creations += 1
            return None
        self.orders[order_id] = provider
        self._shape(provider, order_id)
        plan = self._random.choice(PLANS[provider])
        at = time.monotonic()
        with self._lock:
            for step in plan:
                at += self._random.uniform(1.0, 4.0)
                heapq.heappush(self._steps, (at, self._count, provider, order_id, step))
        return order_id

    def _shape(self, provider: str, order_id: str) -> None:
        """This order's own callback faults."""
        roll = self._random.random()
        switches: dict[str, Any] = {}
        if roll < 0.2:
            switches["duplicate"] = 1
        elif roll < 0.3:
            switches["reorder"] = True
        elif roll < 0.45:
            switches["delay"] = round(self._random.uniform(0.2, 1.5), 2)
        if switches:
            self.sandboxes[provider].set_switches(order_id, **switches)

    @property
    def pending_steps(self) -> int:
        with self._lock:
            return len(self._steps)

    def _play(self) -> None:
        last_flush = time.monotonic()
        while not self._stop.wait(0.05):
            now = time.monotonic()
            due = []
            with self._lock:
                while self._steps and self._steps[0][0] <= now:
                    due.append(heapq.heappop(self._steps))
            for _, _, provider, order_id, (step, extra) in due:
                try:
                    self.sandboxes[provider].advance(order_id, step, **extra)  # type: ignore[attr-defined]
                except (KeyError, ValueError):
                    log.exception("soak: step %s of %s %s refused", step, provider, order_id)
            if now - last_flush > 5.0:
                last_flush = now
                for sandbox in self.sandboxes.values():
                    sandbox.flush()

    def settle(self, timeout: float) -> None:
        """Wait for every step to be played, then turn the callback faults off and deliver
        what is held: from here on the system must converge by itself."""
        deadline = time.monotonic() + timeout
        while self.pending_steps and time.monotonic() < deadline:
            time.sleep(0.2)
        self._stop.set()
        self._thread.join(5)
        for sandbox in self.sandboxes.values():
            sandbox.set_switches(reset=True)
            sandbox.flush()
        for sandbox in self.sandboxes.values():
            sandbox.wait_idle(30)

    def truth(self) -> dict[str, str | None]:
        """Every order's expected canonical status now."""
        truths = {provider: sandbox.truth() for provider, sandbox in self.sandboxes.items()}
        return {oid: expected(provider, truths[provider].get(oid)) for oid, provider in self.orders.items()}
