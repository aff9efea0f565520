"""Changelly Fiat statuses placed in the canonical lifecycle (docs/architecture.md, docs/providers.md 3.5).

``hold`` follows ``pending`` (a provider risk check on a transaction under way);
an order leaves the hold when a poll reports it pending again.
"""

from orders.states import Status, StatusMap

STATUS_MAP = StatusMap.build(
    "changelly",
    {
        "created": Status.AWAITING_PAYMENT,
        "pending": Status.PROCESSING,
        "hold": (Status.ON_HOLD, 35),
        "complete": Status.SUCCESS,
        "failed": Status.FAILED,
        "refunded": Status.REFUNDED,
        "expired": Status.EXPIRED,
    },
)
