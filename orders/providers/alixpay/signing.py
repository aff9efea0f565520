"""AliX Pay signatures: RSA PKCS#1 v1.5 over SHA-256, base64, over pipe-joined fields.

Requests: we sign ``field|field|...|secretKey`` with *our* private key.
IPNs and responses: AliX signs ``externalOrderId|type|fiatAmount|status|secret``
with *its* key, and we verify with AliX's public key. Which secret ends that
string is unconfirmed (doc bug A-3: the partner secretKey or the webhookSecretKey),
so every configured candidate is tried, current and previous, and the names of
the settings that verified are returned for the event record. Trying several
costs no security: the RSA signature already authenticates the message.

Numbers are rendered as JavaScript's ``String(number)`` renders them (AliX is a
Node shop): ``100000.0`` is ``"100000"``, ``1e21`` is ``"1e+21"``. Array.join
renders a missing value (null/undefined) as the empty string, and so do we.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.hashes import SHA256

from config import Named

RESPONSE_FIELDS = ("externalOrderId", "type", "fiatAmount", "status")


def js_number(value: Any) -> str:
    """``String(value)`` as JavaScript computes it for a JSON scalar."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        if abs(value) < 2**53:
            return str(value)
        value = float(value)
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


def signing_string(fields: Sequence[Any], secret: str) -> bytes:
    return "|".join([js_number(f) for f in fields] + [secret]).encode("utf-8")


def sign(fields: Sequence[Any], secret: str, private_key: RSAPrivateKey) -> str:
    """Base64 RSA-SHA256 signature of ``fields|secret``."""
    raw = private_key.sign(signing_string(fields, secret), PKCS1v15(), SHA256())
    return base64.b64encode(raw).decode("ascii")


def response_fields(body: dict[str, Any]) -> list[Any]:
    return [body.get(name) for name in RESPONSE_FIELDS]


def verify(
    fields: Sequence[Any],
    signature: str,
    public_keys: Iterable[Named[RSAPublicKey]],
    secrets: Iterable[Named[str]],
) -> str | None:
    """The ``KEY+SECRET`` setting names that verify ``signature``, or None."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw:
        return None
    secrets = list(secrets)
    for key in public_keys:
        for secret in secrets:
            try:
                key.value.verify(raw, signing_string(fields, secret.value), PKCS1v15(), SHA256())
            except InvalidSignature:
                continue
            return f"{key.name}+{secret.name}"
    return None
