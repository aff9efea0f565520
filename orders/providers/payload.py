"""Reading provider payloads: a JSON object from raw bytes, and schema validation whose
errors name every bad field. Shared by every adapter, so a malformed callback or
create request is refused the same way (400 with the fields) whoever sent it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError

from orders.errors import InvalidPayload


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
