"""Reading provider payloads, the same way for every adapter: a JSON object from raw
bytes, schema validation whose errors name every bad field (so a malformed
callback or create request is refused the same way, 400 with the fields,
whoever sent it), amounts, the order an unverified callback names, and the
record of our own creation request."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError

from orders.errors import BadEventPayload, InvalidPayload
from orders.events import COVERS_ALL, Event, decimal_text

MAX_ID = 128

log = logging.getLogger("rampwatch.providers")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object. InvalidPayload when it is not UTF-8 JSON or not an object."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidPayload("body is not valid UTF-8 JSON") from exc
    if not isinstance(data, dict):
        raise InvalidPayload("body is not a JSON object")
    return data


def load(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    """``schema.load(data)``; InvalidPayload naming every missing or invalid field, sorted."""
    try:
        return schema.load(dict(data))
    except ValidationError as exc:
        names = sorted(str(k) for k in exc.normalized_messages())
        raise InvalidPayload(f"missing or invalid fields: {', '.join(names)}", names) from exc


def amount(value: Any, name: str, *, strict: bool = True) -> str | None:
    """An amount as a canonical decimal string (``100000.0`` -> ``"100000"``), from a JSON
    number or a numeric string; None when absent, empty or zero.

    One policy for every provider: an amount that is present but not a finite
    number is refused in a callback (``strict``: InvalidPayload naming the field,
    so 400), and left out of an answer to our own request (the status it carries
    still counts; the amount stays unknown until a readable one arrives)."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise BadEventPayload(f"not an amount: {type(value).__name__}")
        text = decimal_text(value.strip() if isinstance(value, str) else value)
    except BadEventPayload as exc:
        if strict:
            raise InvalidPayload(f"{name} is not an amount", [name]) from exc
        log.warning("an answer's %s is not an amount: left out", name)
        return None
    return None if text in (None, "0") else text


def order_hint(body: bytes, field: str) -> str | None:
    """The order id an unverified callback names in ``field``, if it looks like one
    (a short printable string); never trusted, only used to poll that order."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    hint = data.get(field) if isinstance(data, dict) else None
    if isinstance(hint, str) and 0 < len(hint) <= MAX_ID and hint.isprintable() and hint.strip() == hint:
        return hint
    return None


def creation_event(
    provider: str,
    request: Mapping[str, Any],
    received_at: datetime,
    *,
    external_order_id: str,
    kind: str,
    personal: Iterable[str] = (),
    **amounts: str | None,
) -> Event:
    """The record of our own creation request: no provider status yet, every field
    ours (``covers`` all), the request as its raw body less its ``personal`` fields
    (names, e-mails, phones, accounts stay with the provider)."""
    dropped = set(personal)
    kept = {k: v for k, v in request.items() if k not in dropped}
    return Event(
        provider=provider,
        external_order_id=external_order_id,
        provider_status=None,
        source="create",
        dedup_key="create",
        raw_body=json.dumps(kept, separators=(",", ":"), ensure_ascii=False, sort_keys=True),
        received_at=received_at.isoformat(),
        kind=kind,
        covers=COVERS_ALL,
        **amounts,  # type: ignore[arg-type]
    )
