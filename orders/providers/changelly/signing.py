"""Changelly Fiat API signatures: RSA PKCS#1 v1.5 over SHA-256, base64 (docs/providers.md 3.4).

Requests: ``X-Api-Signature`` signs the full URL exactly as sent (scheme, host,
path and query string) followed by the exact JSON body text of a POST/PATCH, or
the literal ``{}`` for a GET (doc bug C-7: the docs call it "the query's
serialized body"). The bytes signed are the bytes sent: callers serialise the
body once (``body_bytes``) and send those bytes.

Callbacks: ``X-Callback-Signature`` signs only ``{"orderId":"<id>"}``, as
``JSON.stringify`` renders it, with Changelly's callback key (doc bug C-1). The
status, the amounts and every other field are unprotected, and the same
signature is valid for every callback of that order, so a verified callback
proves only that Changelly once spoke of that order id: it is a trigger for a
poll, never a status. Verification tries the current key, then ``_PREVIOUS``,
and returns the name of the setting that verified.

``sign_callback`` and ``callback_body`` are Changelly's side of a callback (its
callback key signs it): for ``rampwatch simulate`` and tests, never used to accept
anything.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.hashes import SHA256

from config import Named
from orders.providers.jsformat import js_stringify

API_KEY_HEADER = "X-Api-Key"
SIGNATURE_HEADER = "X-Api-Signature"
CALLBACK_SIGNATURE_HEADER = "X-Callback-Signature"
GET_BODY = b"{}"
MAX_SIGNATURE_CHARS = 4096  # base64 of an RSA-16384 signature is 2732 characters


def body_bytes(body: Any) -> bytes:
    """The one serialisation of a request body: compact JSON, UTF-8, non-ASCII kept
    (what Node's ``JSON.stringify`` produces for the same dict)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def request_message(url: str, body: bytes | None) -> bytes:
    """What ``X-Api-Signature`` covers: the URL as sent, then the body as sent (``{}`` without one)."""
    return url.encode("utf-8") + (GET_BODY if body is None else body)


def sign_request(url: str, body: bytes | None, private_key: RSAPrivateKey) -> str:
    return _sign(request_message(url, body), private_key)


def verify_request(url: str, body: bytes | None, signature: str, public_key: RSAPublicKey) -> bool:
    """True when ``signature`` is ours over ``url`` + ``body`` (the sandbox uses this)."""
    return _verify(request_message(url, body), signature, public_key)


def callback_message(order_id: str) -> bytes:
    """``JSON.stringify({orderId})``: the only thing a callback signature covers."""
    return js_stringify({"orderId": order_id}).encode("utf-8")


def sign_callback(order_id: str, private_key: RSAPrivateKey) -> str:
    return _sign(callback_message(order_id), private_key)


def callback_body(order_id: str, status: str, external_order_id: str | None = None) -> bytes:
    """A callback body as Changelly posts it (compact JSON); its signature goes in
    ``X-Callback-Signature`` (``sign_callback(order_id, ...)``) and covers ``orderId`` only."""
    body: dict[str, Any] = {"orderId": order_id, "status": status}
    if external_order_id is not None:
        body["externalOrderId"] = external_order_id
    return body_bytes(body)


def verify_callback(order_id: str, signature: str, public_keys: Iterable[Named[RSAPublicKey]]) -> str | None:
    """The setting name of the first key that verifies ``signature`` for ``order_id``, or None."""
    try:
        message = callback_message(order_id)
    except UnicodeEncodeError:
        # A lone surrogate in the id: Changelly could not have signed it as UTF-8.
        return None
    for key in public_keys:
        if _verify(message, signature, key.value):
            return key.name
    return None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, its name matched case-insensitively (any Mapping, not only
    the case-insensitive ones of requests and werkzeug)."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value


def public_key_pem(key: RSAPublicKey) -> bytes:
    """A public key as Changelly hands its callback key out: PKCS#1 ``RSA PUBLIC KEY`` PEM."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)


def private_key_pem(key: RSAPrivateKey) -> bytes:
    """A private key as Changelly issues it: PKCS#1 ``RSA PRIVATE KEY`` PEM, unencrypted."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _sign(message: bytes, private_key: RSAPrivateKey) -> str:
    return base64.b64encode(private_key.sign(message, PKCS1v15(), SHA256())).decode("ascii")


def _verify(message: bytes, signature: str, public_key: RSAPublicKey) -> bool:
    if not isinstance(signature, str) or not 0 < len(signature) <= MAX_SIGNATURE_CHARS:
        return False
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    if not raw:
        return False
    try:
        public_key.verify(raw, message, PKCS1v15(), SHA256())
    except InvalidSignature:
        return False
    return True
