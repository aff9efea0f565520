"""Reading provider payloads, the same way for every adapter: a JSON object from raw
bytes, schema validation whose errors name every bad field (so a malformed
callback or create request is refused the same way, 400 with the fields,
whoever sent it), amounts, the order an unverified callback names, and the
record of our own creation request.

Hostile input is refused here, before anything recurses over it or signs it:
a body nested deeper than ``MAX_DEPTH`` (a documented limit, checked by a linear
scan of the text, never by running into Python's recursion limit), and strings
holding a NUL character or a lone surrogate (``"\\u0000"``, ``"\\ud800"``), which
no provider sends, which cannot be encoded to sign them, and which the store
cannot keep (PostgreSQL text refuses NUL). Each is an ``InvalidPayload`` (400).

Numbers are read as the providers' JavaScript reads them, since that is what
their signatures cover: an integer is exact below 2**53 and the nearest double
above (``10**309`` is infinite, so not an amount), and ``NaN``/``Infinity``,
which ``JSON.parse`` refuses, are refused. Otherwise two bodies that verify with
the same signature could carry two different amounts."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError

from orders.errors import BadEventPayload, InvalidPayload
from orders.events import COVERS_ALL, Event, decimal_text

MAX_ID = 128
# The longest amount the store keeps (its columns are 64 characters): 1e300 is
# a finite number, but 301 digits written out.
MAX_AMOUNT_CHARS = 64
# The deepest nesting of arrays and objects a body may have. Provider payloads
# are at most four levels deep; 32 leaves room and stays far below what would
# recurse dangerously in json, marshmallow or jsformat.
MAX_DEPTH = 32

# One token at a time, left to right: a whole string (possessive, so no
# backtracking), a bracket, or a lone quote (an unterminated string).
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*+"|[\[{\]}]|"', re.DOTALL)
# What no provider sends and neither signing (UTF-8) nor the store can take.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# What an order id can never hold: control characters and lone surrogates.
_NOT_IN_IDS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")

log = logging.getLogger("rampwatch.providers")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object. InvalidPayload when it is not UTF-8 JSON, not an
    object, nested deeper than ``MAX_DEPTH``, or holds a NUL or a lone surrogate."""
    data = parse_json(body)
    if not isinstance(data, dict):
        raise InvalidPayload("body is not a JSON object")
    return data


def parse_json(body: bytes) -> Any:
    """Any JSON value from the bytes of a callback or a provider's answer, read as the
    providers' JavaScript reads it, within the same bounds as ``parse_json_object``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayload("body is not valid UTF-8 JSON") from exc
    if nested_deeper_than(text, MAX_DEPTH):
        raise InvalidPayload(f"body is nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text, parse_int=_js_integer, parse_constant=_no_constant)
    except ValueError as exc:
        raise InvalidPayload("body is not valid UTF-8 JSON") from exc
    # Strict UTF-8 and strict JSON let a NUL or a lone surrogate in only as a backslash-u escape.
    if "\\u" in text and _holds_unstorable(data):
        raise InvalidPayload("body holds a NUL character or a lone surrogate in a string")
    return data


def _js_integer(literal: str) -> int | float:
    """An integer literal as ``JSON.parse`` reads it: exact below 2**53, else the
    nearest double (an infinity past the largest)."""
    if len(literal) <= 15:
        return int(literal)
    number = float(literal)
    return int(number) if abs(number) < 2**53 else number


def _no_constant(literal: str) -> Any:
    raise ValueError(f"{literal} is not JSON")


def nested_deeper_than(text: str, limit: int) -> bool:
    """Whether the JSON ``text`` nests arrays and objects more than ``limit`` deep.

    Linear in the text: brackets inside strings do not count, and the scan stops at
    an unterminated string (``json.loads`` refuses that body anyway)."""
    if text.count("[") + text.count("{") <= limit:  # not even counting those in strings
        return False
    depth = 0
    for match in _TOKENS.finditer(text):
        lexeme = match.group()
        if lexeme in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif lexeme in ("]", "}"):
            depth -= 1
        elif lexeme == '"':
            break
    return False


def _holds_unstorable(value: Any) -> bool:
    """Whether any key or string in ``value`` (depth already bounded) holds a NUL or a lone surrogate."""
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is not None
    if isinstance(value, dict):
        return any(_holds_unstorable(k) or _holds_unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_unstorable(v) for v in value)
    return False


def usable_order_id(text: str) -> bool:
    """Whether ``text`` can be an order id at all: 1 to ``MAX_ID`` characters, no
    control character, no lone surrogate (the store can keep no other, so no order
    has another; refusing it early keeps it out of queries and jobs)."""
    return 0 < len(text) <= MAX_ID and _NOT_IN_IDS.search(text) is None


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
    number, or longer than ``MAX_AMOUNT_CHARS`` written out, is refused in a
    callback or a create request (``strict``: InvalidPayload naming the field,
    so 400), and left out of an answer to our own request (the status it carries
    still counts; the amount stays unknown until a readable one arrives)."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise BadEventPayload(f"not an amount: {type(value).__name__}")
        text = decimal_text(value.strip() if isinstance(value, str) else value)
        if text is not None and len(text) > MAX_AMOUNT_CHARS:
            raise BadEventPayload(f"amount longer than {MAX_AMOUNT_CHARS} characters")
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
        data = parse_json_object(body)
    except InvalidPayload:
        return None
    hint = data.get(field)
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
