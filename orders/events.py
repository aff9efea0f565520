"""The event contract: what every flow (callback, poll, creation, manual) hands to ``apply``.

An ``Event`` is made of primitives only and travels as versioned JSON through the
RQ ``events`` queue, so producers and consumers of different releases can read
each other. ``from_dict`` refuses a payload it does not understand (named error,
never a guess) and reads version 1 payloads still queued by an older release.
Amounts are decimal strings, never floats.

Trust travels with the event (version 2):

* ``covers`` names the fields that the provider's signature, or a verified
  answer to our own signed request, vouches for. Only those may reach the order
  row, the API and notifications; ``None`` (a version 1 payload) means "as the
  adapter declares for this source" and is filled in by the worker; an event
  that covers nothing changes nothing.
* ``claimed_status`` is a status somebody claims without proof (an unsigned
  field of a callback, a payout not confirmed yet): kept for the timeline, never
  applied.
* ``fetched_at`` is when a poll's request was sent: its answer describes the
  provider at or after that moment, which orders it against other observations.
* ``identity`` is what makes two deliveries the same delivery: the content the
  signature covers, so that replays with different unsigned bytes are still one
  (``fingerprint``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from orders.errors import BadEventPayload

EVENT_VERSION = 2
READABLE_VERSIONS = (1, 2)
SOURCES = frozenset({"callback", "poll", "create", "manual", "replay"})
CREATION_OUTCOMES = (None, "refused", "unconfirmed")
# Sources whose status is a verified answer about the provider's present, taken at
# ``fetched_at`` (a poll, or the provider's answer to our creation request).
ANSWER_SOURCES = frozenset({"poll", "create"})
# The fields an event may carry to the order; ``covers`` names a subset of them.
COVERABLE = (
    "provider_status",
    "provider_order_id",
    "kind",
    "fiat_amount",
    "fiat_currency",
    "crypto_amount",
    "crypto_currency",
    "details",
)
COVERS_ALL: tuple[str, ...] = COVERABLE


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
    covers: tuple[str, ...] | None = ()
    claimed_status: str | None = None
    fetched_at: str | None = None  # ISO 8601, aware UTC; polls and creation answers
    identity: str | None = None
    # Of a ``create`` event: how our creation request ended when it did not end in
    # an answer: "refused" (the provider said no: the order ends FAILED) or
    # "unconfirmed" (no answer: timeout, outage, an answer that did not verify;
    # the order stays open and is polled).
    creation: str | None = None
    v: int = EVENT_VERSION

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise BadEventPayload(f"unknown event source {self.source!r}")
        if not self.external_order_id and not self.provider_order_id:
            raise BadEventPayload("an event needs external_order_id or provider_order_id")
        if self.covers is not None:
            if isinstance(self.covers, str) or not all(isinstance(c, str) for c in self.covers):
                raise BadEventPayload("covers must be a list of field names")
            object.__setattr__(self, "covers", tuple(self.covers))  # JSON gives a list
            unknown = set(self.covers) - set(COVERABLE)
            if unknown:
                raise BadEventPayload(f"covers names unknown fields: {', '.join(sorted(unknown))}")
        if self.creation not in CREATION_OUTCOMES:
            raise BadEventPayload(f"unknown creation outcome {self.creation!r}")
        if self.creation is not None and self.source != "create":
            raise BadEventPayload("only a create event has a creation outcome")
        for name in ("received_at", "fetched_at"):
            value = getattr(self, name)
            if value is None and name == "fetched_at":
                continue
            try:
                moment = datetime.fromisoformat(value)
            except (TypeError, ValueError) as exc:
                raise BadEventPayload(f"{name} is not an ISO 8601 time: {value!r}") from exc
            if moment.tzinfo is None:
                raise BadEventPayload(f"{name} has no time zone: {value!r}")

    @property
    def received(self) -> datetime:
        return datetime.fromisoformat(self.received_at)

    @property
    def observed(self) -> datetime:
        """When the provider was seen in the state this event reports: the request time
        of an answer, the receipt time of anything else."""
        if self.fetched_at is not None and self.source in ANSWER_SOURCES:
            return datetime.fromisoformat(self.fetched_at)
        return self.received

    def covered(self, name: str) -> bool:
        return self.covers is not None and name in self.covers

    @property
    def order_key(self) -> tuple[str, str]:
        return (self.provider, self.external_order_id)

    def to_dict(self) -> dict[str, Any]:
        # As dataclasses.asdict, without its recursion over every field (every callback is
        # serialised once in the receiver's request): only ``details`` nests.
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["details"] = copy.deepcopy(dict(self.details)) if self.details else {}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        if not isinstance(data, Mapping):
            raise BadEventPayload("event payload is not an object")
        version = data.get("v")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            readable = ", ".join(str(v) for v in READABLE_VERSIONS)
            raise BadEventPayload(f"unsupported event version {version!r} (this release reads {readable})")
        if version == 1:
            data = _from_v1(data)
        unknown = data.keys() - _FIELD_SET
        if unknown:
            raise BadEventPayload(f"unknown event fields: {', '.join(sorted(unknown))}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise BadEventPayload(str(exc)) from exc

    def fingerprint(self) -> str:
        """A stable id for this delivery: provider, source and what the signature covers
        (``identity``), else the raw bytes. Two deliveries with one fingerprint are one
        delivery seen twice."""
        h = hashlib.sha256()
        for part in (self.provider, self.source, self.identity or self.raw_body):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        return h.hexdigest()[:40]


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Event))
_FIELD_SET = frozenset(_FIELD_NAMES)


def _from_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """A version 1 payload (queued by the previous release) as version 2. Version 1
    said nothing of coverage (the adapter's declaration applies: ``covers=None``)
    and kept unsigned claims in ``details``."""
    out = {**data, "v": 2, "covers": None}
    details = data.get("details")
    if isinstance(details, Mapping) and "claimed_status" in details:
        details = dict(details)
        claim = details.pop("claimed_status")
        out["details"] = details
        out["claimed_status"] = claim if isinstance(claim, str) else None
    return out
