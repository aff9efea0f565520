"""The contract every provider adapter meets, checked by one parametrised test.

An adapter turns a provider's raw callback bytes into a verified ``Event``
(``parse_callback``), fetches an order's present state as a ``poll`` Event
(``poll``), and names the order an unverified callback points at
(``order_hint``) so that a misconfigured key heals through a poll instead of
losing the update.

``covers``: for each event source (``callback``, ``poll``, ``create``), the
Event fields that the provider's signature, or a verified answer to our own
request, vouches for. Every Event the adapter builds carries it
(``Event.covers``); only those fields may reach the order, the API and
notifications. A version 1 event still queued by the previous release gets it
from here.

``callbacks_are_triggers``: True when the provider's callback signature does not
cover the status (Changelly signs only the order id). Such a callback is parsed
into an Event with no provider status, recorded, and followed at once by a poll
whose answer is what gets applied.

Polls set ``Event.fetched_at`` to the moment before the request was sent: the
answer describes the provider at or after it.

Creation (optional, ``orders.service``): ``validate_create``, ``creation_event``
and ``submit_create`` (the provider's answer as an Event, or None when the
provider answers with no order state, as Fuspay does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from orders.events import Event
from orders.states import StatusMap


@runtime_checkable
class ProviderAdapter(Protocol):
    slug: str
    status_map: StatusMap
    callbacks_are_triggers: bool
    covers: Mapping[str, tuple[str, ...]]

    def parse_callback(self, body: bytes, headers: Mapping[str, str], received_at: datetime) -> Event:
        """Verify and parse a callback. Raises InvalidPayload (400) or SignatureInvalid (401)."""
        ...

    def poll(
        self, external_order_id: str, *, kind: str | None = None, provider_order_id: str | None = None
    ) -> Event:
        """The order's present state at the provider (``kind`` and ``provider_order_id``
        are what the store knows, if anything). Raises ProviderError subclasses."""
        ...

    def order_hint(self, body: bytes) -> str | None:
        """The external order id an unverified callback names, if any (never trusted)."""
        ...


@runtime_checkable
class CreatingAdapter(Protocol):
    """An adapter that can create orders at its provider (``orders.service``)."""

    slug: str

    def validate_create(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The validated request; InvalidPayload naming every bad field."""
        ...

    def creation_event(self, request: Mapping[str, Any], received_at: datetime) -> Event:
        """The record of our own request (no provider status yet)."""
        ...

    def submit_create(self, request: Mapping[str, Any]) -> Event | None:
        """Send it; the provider's answer as a ``create`` Event, or None when the
        provider answers without an order state."""
        ...


@runtime_checkable
class BackfillingAdapter(Protocol):
    """An adapter that can list the provider's orders by creation date (``rampwatch backfill``)."""

    slug: str

    def backfill(self, since: datetime, until: datetime | None = None) -> Iterator[Event]:
        """Every order created in ``[since, until]`` as a ``poll`` Event."""
        ...


@dataclass(frozen=True)
class Provider:
    """One registry entry: everything the product knows a provider by. The slug names
    the URL segment (``/webhooks/<slug>``), the folder, the fixtures and, upper-cased,
    the settings prefix."""

    slug: str
    adapter: Callable[..., ProviderAdapter]  # (its settings, a requests.Session)
    status_map: StatusMap
    settings: type  # a frozen dataclass of ``config.setting`` fields

    def __post_init__(self) -> None:
        if self.status_map.provider != self.slug:
            raise ValueError(f"{self.slug}: its status map is {self.status_map.provider!r}'s")
        if getattr(self.settings, "prefix", None) != self.slug.upper() + "_":
            raise ValueError(f"{self.slug}: its settings prefix must be {self.slug.upper()}_")
