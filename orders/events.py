"""The event contract: what every flow (callback, poll, creation, manual) hands to ``apply``.

An ``Event`` is made of primitives only and travels as versioned JSON through the
RQ ``events`` queue, so producers and consumers of different releases can read
each other. ``from_dict`` refuses a payload it does not understand (named error,
never a guess). Amounts are decimal strings, never floats.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from orders.errors import BadEventPayload

EVENT_VERSION = 1
SOURCES = frozenset({"callback", "poll", "create", "manual", "replay"})


def utcnow() -> datetime:
    return datetime.now(UTC)


def decimal_text(value: Any) -> str | None:
    """A canonical decimal string for an amount (``100000.0`` -> ``"100000"``), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadEventPayload(f"not an amount: {value!r}")
    try:
        d = Decimal(str(value))
    except InvalidOperation as exc:
        raise BadEventPayload(f"not an amount: {value!r}") from exc
    if not d.is_finite():
        raise BadEventPayload(f"not a finite amount: {value!r}")
    text = format(d.normalize(), "f")
    return "0" if text in ("-0", "0") else text


@dataclass(frozen=True)
class Event:
    provider: str
    external_order_id: str
    provider_status: str | None
    source: str
    dedup_key: str
    raw_body: str
    received_at: str  # ISO 8601, aware UTC
    verified_by: str | None = None  # the setting(s) whose key verified it
    provider_order_id: str | None = None
    kind: str | None = None  # sell, buy, cashout...
    fiat_amount: str | None = None
    fiat_currency: str | None = None
    crypto_amount: str | None = None
    crypto_currency: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    v: int = EVENT_VERSION

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise BadEventPayload(f"unknown event source {self.source!r}")
        if not self.external_order_id and not self.provider_order_id:
            raise BadEventPayload("an event needs external_order_id or provider_order_id")

    @property
    def received(self) -> datetime:
        return datetime.fromisoformat(self.received_at)

    @property
    def order_key(self) -> tuple[str, str]:
        return (self.provider, self.external_order_id)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["details"] = dict(self.details)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        if not isinstance(data, Mapping):
            raise BadEventPayload("event payload is not an object")
        version = data.get("v")
        if version != EVENT_VERSION:
            raise BadEventPayload(
                f"unsupported event version {version!r} (this release reads {EVENT_VERSION})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise BadEventPayload(f"unknown event fields: {', '.join(sorted(unknown))}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise BadEventPayload(str(exc)) from exc

    def fingerprint(self) -> str:
        """A stable id for this delivery: provider, source and the raw bytes."""
        h = hashlib.sha256()
        for part in (self.provider, self.source, self.external_order_id, self.raw_body):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()[:40]
