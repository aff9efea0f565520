"""AliX Pay signatures: RSA PKCS#1 v1.5 over SHA-256, base64, over pipe-joined fields.

Requests: we sign ``field|field|...|secretKey`` with *our* private key.
IPNs and responses: AliX signs ``externalOrderId|type|fiatAmount|status|secret``
with *its* key, and we verify with AliX's public key. Which secret ends that
string is unconfirmed (doc bug A-3: the partner secretKey or the webhookSecretKey),
so every configured candidate is tried, current and previous, and the names of
the settings that verified are returned for the event record. Trying several
costs no security: the RSA signature already authenticates the message.

``callback_body`` is AliX's side of an IPN (AliX's private key signs it): for
``rampwatch simulate`` and tests, never used to accept anything.

Numbers are rendered as JavaScript's ``String(number)`` renders them (AliX is a
Node shop): ``100000.0`` is ``"100000"``, ``1e21`` is ``"1e+21"``. Array.join
renders a missing value (null/undefined) as the empty string, and so do we.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.hashes import SHA256

from config import Named
from orders.providers.jsformat import js_number

RESPONSE_FIELDS = ("externalOrderId", "type", "fiatAmount", "status")


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
    keys = list(public_keys)
    for secret in secrets:  # the caller puts the likeliest first: one string, one check
        try:
            message = signing_string(fields, secret.value)
        except UnicodeEncodeError:
            # A lone surrogate in a field: AliX could not have signed it as UTF-8.
            return None
        for key in keys:
            try:
                key.value.verify(raw, message, PKCS1v15(), SHA256())
            except InvalidSignature:
                continue
            return f"{key.name}+{secret.name}"
    return None


def callback_body(
    external_order_id: str,
    status: str,
    fiat_amount: int | float,
    secret: str,
    alix_private_key: RSAPrivateKey,
    *,
    order_type: str = "sell",
    **extra: Any,
) -> bytes:
    """An IPN body as AliX posts it: the order's fields and ``signature``, AliX's RSA
    signature over ``externalOrderId|type|fiatAmount|status|secret``. Compact JSON."""
    body: dict[str, Any] = {
        "externalOrderId": external_order_id,
        "type": order_type,
        "fiatAmount": fiat_amount,
        "status": status,
        **extra,
    }
    body["signature"] = sign(response_fields(body), secret, alix_private_key)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
