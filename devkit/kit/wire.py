"""What goes on the wire between a sandbox and its clients: JSON bytes and checked values.

A sandbox answers as a Node service would (compact JSON, UTF-8, key order kept)
and refuses what the real provider would refuse; these helpers are the small,
shared part of that: ``compact``, ``parse_object``, ``finite_number`` and
``check_nonempty``.
"""

from __future__ import annotations

import json
import math
from typing import Any


def compact(payload: Any) -> bytes:
    """Compact JSON, UTF-8, as a Node service would send it."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object in ``raw`` (key order kept), or None."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finite_number(value: Any) -> bool:
    """True for an int or float that is finite (JSON's numbers; never a bool)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def check_nonempty(**values: Any) -> None:
    """ValueError ``<name> must be a non-empty string`` for the first of ``values`` that is not."""
    for name, value in values.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string")
