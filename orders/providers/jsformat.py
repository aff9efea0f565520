"""JavaScript's renderings, for providers that sign what Node would produce.

``js_number`` is ``String(n)``; ``js_stringify`` is ``JSON.stringify(value)`` for a
value parsed from JSON (key order kept as received, numbers as JavaScript prints
them: ``1000.0`` is ``1000``). Strings are escaped as ``JSON.stringify`` escapes
them, which for these inputs is what Python's ``json`` does with
``ensure_ascii=False``.

Every JSON number is a double in JavaScript: an integer too large for one
(``10**309``) is ``Infinity``, which ``String`` prints as ``"Infinity"`` and
``JSON.stringify`` as ``null``; Python's ``float()`` would raise instead. The
nesting ``js_stringify`` recurses over is bounded by whoever parsed the value
(``orders.providers.payload.MAX_DEPTH`` for callbacks).
"""

from __future__ import annotations

import json
import math
from typing import Any


def _as_double(value: int) -> int | float:
    """The integer as JavaScript holds it: exact below 2**53, else the nearest double,
    or an infinity when it is beyond every double."""
    if abs(value) < 2**53:
        return value
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def js_number(value: Any) -> str:
    """``String(value)`` as JavaScript computes it for a JSON scalar."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        value = _as_double(value)
        if isinstance(value, int):
            return str(value)
    if not isinstance(value, float):
        raise TypeError(f"not a JSON scalar: {type(value).__name__}")
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp = repr(abs(value)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    # value = 0.<digits> * 10**point
    point = len(whole.lstrip("0")) + (int(exp) if exp else 0)
    if not whole.lstrip("0"):
        point = -(len(frac) - len(frac.lstrip("0"))) + (int(exp) if exp else 0)
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= point <= 21:
        out = digits + "0" * (point - k)
    elif 0 < point <= 21:
        out = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        out = "0." + "0" * (-point) + digits
    else:
        e = point - 1
        esign = "+" if e >= 0 else "-"
        out = (digits[0] + ("." + digits[1:] if k > 1 else "")) + "e" + esign + str(abs(e))
    return sign + out


def js_stringify(value: Any) -> str:
    """``JSON.stringify(value)`` for JSON-shaped Python data (dict order kept)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, int):
            value = _as_double(value)
        if isinstance(value, float) and not math.isfinite(value):
            return "null"  # JSON.stringify(NaN) === "null"
        return js_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(
                f"{json.dumps(str(k), ensure_ascii=False)}:{js_stringify(v)}" for k, v in value.items()
            )
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(js_stringify(v) for v in value) + "]"
    raise TypeError(f"not JSON-shaped: {type(value).__name__}")
