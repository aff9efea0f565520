"""Fuspay Axis event names placed in the canonical lifecycle (docs/architecture.md, docs/providers.md 2.3).

The provider status of a Fuspay order is the event name. ``sell.event.close`` (sic,
doc bug F-3) means REFUNDED only with ``meta_data.status == "refunded"``; the
adapter reports any other close as ``sell.event.close:<status>``, which is not in
this map and so is raised as an unknown status. The KYC hold sits after
``received.crypto`` because that is where Fuspay raises it.
"""

from orders.states import Status, StatusMap

STATUS_MAP = StatusMap.build(
    "fuspay",
    {
        # sell (off-ramp)
        "event.sell.init": Status.AWAITING_PAYMENT,
        "event.sell.received.crypto": Status.PAYMENT_RECEIVED,
        "event.sell.received.fiat_kyc_error": (Status.ON_HOLD, 25),
        "event.sell.credited.fiat": Status.SUCCESS,
        "event.sell.error": Status.FAILED,
        "sell.event.close": Status.REFUNDED,
        # buy (on-ramp)
        "event.buy.init": Status.AWAITING_PAYMENT,
        "event.buy.received.fiat": Status.PAYMENT_RECEIVED,
        "event.buy.credited.crypto": Status.SUCCESS,
        "event.buy.error": Status.FAILED,
    },
)
