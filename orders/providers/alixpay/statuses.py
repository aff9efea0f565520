"""AliX Pay statuses placed in the canonical lifecycle (docs/architecture.md, docs/providers.md 1.5).

PAYMENT_COMPLETED and PROCESSING_TOKEN_TRANSFER share a rank: their real order
is unconfirmed (doc bug A-4). Both mean PROCESSING; of the two, the order shows
the one listed later here once it has seen it, whichever arrived first
(``orders.plan.resolve``). FAIL appears only in the cash-out table.
"""

from orders.states import Status, StatusMap

STATUS_MAP = StatusMap.build(
    "alixpay",
    {
        "AWAITING_PAYMENT": Status.AWAITING_PAYMENT,
        "PAYMENT_COMPLETED": Status.PROCESSING,
        "PROCESSING_TOKEN_TRANSFER": Status.PROCESSING,
        "SUCCESS": Status.SUCCESS,
        "FAIL": Status.FAILED,
        "ERROR": Status.FAILED,
    },
)
