"""Changelly signatures: requests over URL + body as sent, callbacks over {"orderId"} only."""

from __future__ import annotations

import base64
import json

from changelly_support import keys
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from config import Named
from orders.providers.changelly import signing

CURRENT = "CHANGELLY_CALLBACK_PUBLIC_KEY"
PREVIOUS = "CHANGELLY_CALLBACK_PUBLIC_KEY_PREVIOUS"


def callback_keys() -> tuple[Named, ...]:
    k = keys()
    return (Named(CURRENT, k.callback.public_key()), Named(PREVIOUS, k.callback_old.public_key()))


def test_get_signs_the_full_url_with_its_query_and_a_literal_empty_object() -> None:
    url = "https://fiat-api.changelly.com/v1/orders?orderId=b38b83f0&limit=1"
    assert signing.request_message(url, None) == (url + "{}").encode()
    sig = signing.sign_request(url, None, keys().partner)
    # What the recipe in docs/providers.md 3.4 computes, independently of our helper.
    public = keys().partner.public_key()
    public.verify(base64.b64decode(sig), (url + "{}").encode(), PKCS1v15(), SHA256())
    assert signing.verify_request(url, None, sig, public)
    assert not signing.verify_request(url.replace("limit=1", "limit=2"), None, sig, public)
    assert not signing.verify_request(url.split("?")[0], None, sig, public)


def test_post_signs_the_exact_body_bytes() -> None:
    body = signing.body_bytes({"externalOrderId": "o-1", "amountFrom": "0.5", "userAgent": "Müller/1"})
    assert body == '{"externalOrderId":"o-1","amountFrom":"0.5","userAgent":"Müller/1"}'.encode()
    url = "https://fiat-api.changelly.com/v1/sell/orders"
    sig = signing.sign_request(url, body, keys().partner)
    public = keys().partner.public_key()
    assert signing.verify_request(url, body, sig, public)
    # Same data, other bytes (spaces, key order, ASCII escapes): not what was signed.
    for other in (
        json.dumps(json.loads(body)).encode(),
        json.dumps(json.loads(body), separators=(",", ":")).encode(),
        signing.body_bytes({"amountFrom": "0.5", "externalOrderId": "o-1", "userAgent": "Müller/1"}),
    ):
        assert other != body
        assert not signing.verify_request(url, other, sig, public)


def test_callback_signature_covers_the_order_id_as_json_stringify_renders_it() -> None:
    assert signing.callback_message("5154302e-3stl-75p4") == b'{"orderId":"5154302e-3stl-75p4"}'
    assert signing.callback_message('a"é') == '{"orderId":"a\\"é"}'.encode()
    sig = signing.sign_callback("ord-1", keys().callback)
    assert signing.verify_callback("ord-1", sig, callback_keys()) == CURRENT


def test_callback_verification_accepts_the_previous_key_during_rotation() -> None:
    sig = signing.sign_callback("ord-1", keys().callback_old)
    assert signing.verify_callback("ord-1", sig, callback_keys()) == PREVIOUS
    assert signing.verify_callback("ord-1", sig, callback_keys()[:1]) is None


def test_callback_signature_for_another_order_or_key_fails() -> None:
    assert (
        signing.verify_callback("ord-2", signing.sign_callback("ord-1", keys().callback), callback_keys())
        is None
    )
    assert (
        signing.verify_callback("ord-1", signing.sign_callback("ord-1", keys().other), callback_keys())
        is None
    )
    for junk in ("", "not base64!", "AAAA", "x" * 5000):
        assert signing.verify_callback("ord-1", junk, callback_keys()) is None


def test_header_lookup_ignores_case() -> None:
    assert signing.header({"x-callback-signature": "s"}, "X-Callback-Signature") == "s"
    assert signing.header({"X-CALLBACK-SIGNATURE": "s"}, "X-Callback-Signature") == "s"
    assert signing.header({"X-Other": "s"}, "X-Callback-Signature") is None


def test_keys_round_trip_in_changelly_pkcs1_form() -> None:
    private_pem = signing.private_key_pem(keys().partner)
    public_pem = signing.public_key_pem(keys().callback.public_key())
    assert private_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert public_pem.startswith(b"-----BEGIN RSA PUBLIC KEY-----")
    loaded = load_pem_private_key(private_pem, None)
    sig = signing.sign_request("https://x/v1/orders", None, loaded)  # type: ignore[arg-type]
    assert signing.verify_request("https://x/v1/orders", None, sig, keys().partner.public_key())
    reloaded = load_pem_public_key(public_pem)
    good = signing.sign_callback("o", keys().callback)
    assert signing.verify_callback("o", good, [Named(CURRENT, reloaded)]) == CURRENT  # type: ignore[list-item]
