"""The contract every provider adapter meets, checked by one parametrised test.

An adapter turns a provider's raw callback bytes into a verified ``Event``
(``parse_callback``), fetches an order's present state as a ``poll`` Event
(``poll``), and names the order an unverified callback points at
(``order_hint``) so that a misconfigured key heals through a poll instead of
losing the update.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol, runtime_checkable

from orders.events import Event
from orders.states import StatusMap


@runtime_checkable
class ProviderAdapter(Protocol):
    slug: str
    status_map: StatusMap

    def parse_callback(self, body: bytes, headers: Mapping[str, str], received_at: datetime) -> Event:
        """Verify and parse a callback. Raises InvalidPayload (400) or SignatureInvalid (401)."""
        ...

    def poll(self, external_order_id: str) -> Event:
        """The order's present state at the provider. Raises ProviderError subclasses."""
        ...

    def order_hint(self, body: bytes) -> str | None:
        """The external order id an unverified callback names, if any (never trusted)."""
        ...
