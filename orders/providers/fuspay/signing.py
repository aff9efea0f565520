"""Fuspay Axis event signatures: SHA-512 over the body less ``signature``, hex.

Fuspay says only "sha512(body, public_key+secret_key)" (doc bug F-7): HMAC or a
plain hash with the key appended or prepended is not published, nor is the key
material (other Fuspay pages sign with the secret key alone). So the recipe and
the key material are settings (``FUSPAY_SIGNATURE_RECIPE``, ``FUSPAY_SIGNATURE_KEY``),
and a fourth recipe, ``oracle``, asks Fuspay's own signing endpoint (see the client).

What is signed: the received body without ``signature``, in the received key
order, rendered as JavaScript's ``JSON.stringify`` renders it (Fuspay is a Node
shop: ``1000.0`` is ``1000``, no spaces). Every configured key combination is
tried, current and ``_PREVIOUS`` twins, and the names of the settings that
verified are returned for the event record. Comparisons are constant-time.

``callback_body`` is Fuspay's side of an event (the shared partner keys sign it):
for ``rampwatch simulate`` and tests.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from config import Named
from orders.providers.fuspay.settings import FuspaySettings
from orders.providers.jsformat import js_stringify

HMAC_SHA512 = "hmac-sha512"
SHA512_APPEND = "sha512-append"
SHA512_PREPEND = "sha512-prepend"
ORACLE = "oracle"
LOCAL_RECIPES = (HMAC_SHA512, SHA512_APPEND, SHA512_PREPEND)

# the values of FUSPAY_SIGNATURE_KEY (key names, not keys)
PUBLIC_PLUS_SECRET = "public+secret"  # noqa: S105
SECRET_ONLY = "secret"  # noqa: S105
KEY_MODES = (PUBLIC_PLUS_SECRET, SECRET_ONLY)


def unsigned(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` without ``signature``, key order kept."""
    return {k: v for k, v in body.items() if k != "signature"}


def serialise(body_without_signature: Mapping[str, Any]) -> str:
    """What is hashed: ``JSON.stringify(body)``."""
    return js_stringify(dict(body_without_signature))


def sign(body_without_signature: Mapping[str, Any], key: str, recipe: str) -> str:
    """The lowercase hex SHA-512 signature of a body by a local ``recipe``.
    Raises ValueError for ``oracle`` (remote) or an unknown recipe."""
    data = serialise(body_without_signature).encode("utf-8")
    secret = key.encode("utf-8")
    if recipe == HMAC_SHA512:
        return hmac.new(secret, data, hashlib.sha512).hexdigest()
    if recipe == SHA512_APPEND:
        return hashlib.sha512(data + secret).hexdigest()
    if recipe == SHA512_PREPEND:
        return hashlib.sha512(secret + data).hexdigest()
    raise ValueError(f"not a local signature recipe: {recipe!r} (one of {', '.join(LOCAL_RECIPES)})")


def key_material(public_key: str, secret_key: str, key_mode: str) -> str:
    """The signing key of a key mode: ``public+secret`` concatenated, or the secret."""
    if key_mode == PUBLIC_PLUS_SECRET:
        return public_key + secret_key
    if key_mode == SECRET_ONLY:
        return secret_key
    raise ValueError(f"unknown key mode {key_mode!r} (one of {', '.join(KEY_MODES)})")


def candidate_keys(settings: FuspaySettings) -> list[Named[str]]:
    """Every key to try, current first, named after the settings it is made of."""
    if settings.signature_key == SECRET_ONLY:
        return [Named(s.name, s.value) for s in settings.secret_keys]
    return [
        Named(f"{p.name}+{s.name}", key_material(p.value, s.value, PUBLIC_PLUS_SECRET))
        for p in settings.public_keys
        for s in settings.secret_keys
    ]


def same(expected: str, received: str) -> bool:
    """Constant-time comparison of two hex signatures (case-insensitive)."""
    if not received.isascii() or not expected.isascii():
        return False
    return hmac.compare_digest(expected.lower(), received.strip().lower())


def verify(
    body_without_signature: Mapping[str, Any], signature: str, keys: Iterable[Named[str]], recipe: str
) -> str | None:
    """The name of the key that verifies ``signature`` by a local recipe, or None."""
    for key in keys:
        try:
            expected = sign(body_without_signature, key.value, recipe)
        except UnicodeEncodeError:
            # A lone surrogate in the body: Fuspay could not have signed it as UTF-8.
            return None
        if same(expected, signature):
            return key.name
    return None


def callback_body(body: Mapping[str, Any], key: str, recipe: str) -> bytes:
    """An event body as Fuspay posts it: ``body`` (its key order kept) with ``signature``
    by a local ``recipe`` keyed with ``key`` (``key_material``), as ``JSON.stringify``
    renders it."""
    fields = unsigned(body)
    return serialise({**fields, "signature": sign(fields, key, recipe)}).encode("utf-8")
