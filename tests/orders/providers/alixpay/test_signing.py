"""AliX signatures: JS number rendering, the signed string, sign/verify, tampering, rotation."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from conftest import SECRET, WEBHOOK_SECRET, Keys
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256

from config import Named
from orders.providers.alixpay.signing import js_number, response_fields, sign, signing_string, verify

FIELDS: list[Any] = ["ord-0001", "SELL", 100000, "SUCCESS"]
SECRETS = (
    Named("ALIXPAY_SECRET_KEY", SECRET),
    Named("ALIXPAY_WEBHOOK_SECRET_KEY", WEBHOOK_SECRET),
)
OLD_SECRET = "sk-partner-secret-0000"
OLD_WEBHOOK_SECRET = "whsec-partner-0000"
ALL_SECRETS = (
    *SECRETS,
    Named("ALIXPAY_SECRET_KEY_PREVIOUS", OLD_SECRET),
    Named("ALIXPAY_WEBHOOK_SECRET_KEY_PREVIOUS", OLD_WEBHOOK_SECRET),
)


def current_keys(keys: Keys) -> list[Named[Any]]:
    return [Named("ALIXPAY_PUBLIC_KEY", keys.alix.public)]


def rotating_keys(keys: Keys) -> list[Named[Any]]:
    return [
        Named("ALIXPAY_PUBLIC_KEY", keys.alix.public),
        Named("ALIXPAY_PUBLIC_KEY_PREVIOUS", keys.alix_old.public),
    ]


def raw_sign(keys_private: Any, message: bytes) -> str:
    """Sign exact bytes, independently of ``signing_string``."""
    return base64.b64encode(keys_private.sign(message, PKCS1v15(), SHA256())).decode()


# --------------------------------------------------------------------------- js_number


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The vectors below are what JavaScript's String(n) prints.
        (100000, "100000"),
        (100000.0, "100000"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (123.456, "123.456"),
        (0.1, "0.1"),
        (-0.5, "-0.5"),
        (2**53, "9007199254740992"),
        (float(2**53), "9007199254740992"),
        (-0.0, "0"),
        (0, "0"),
        (0.0, "0"),
        (1.23e-7, "1.23e-7"),
        (5e-324, "5e-324"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1.5e-6, "0.0000015"),
        (0.05, "0.05"),
        (-1e21, "-1e+21"),
        (1.5e21, "1.5e+21"),
        (123456789012345680000.0, "123456789012345680000"),
        (2**60, "1152921504606847000"),
        (10**21, "1e+21"),
        (12345678901234567890, "12345678901234567000"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (2**53 - 1, "9007199254740991"),
        (-(2**53 - 1), "-9007199254740991"),
        (99.99, "99.99"),
        (1e16, "10000000000000000"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (True, "true"),
        (False, "false"),
        ("100000.00", "100000.00"),
        ("1e21", "1e21"),
        ("", ""),
        ("ord-é", "ord-é"),
        (None, ""),
    ],
)
def test_js_number_matches_javascript_string(value: Any, expected: str) -> None:
    assert js_number(value) == expected


@pytest.mark.parametrize("value", [[1], {"a": 1}, object()])
def test_js_number_refuses_non_scalars(value: Any) -> None:
    with pytest.raises(TypeError):
        js_number(value)


# --------------------------------------------------------------------------- the signed string


def test_signing_string_is_pipe_joined_fields_then_secret() -> None:
    assert signing_string(["ord-1", "SELL", 100000.0, "SUCCESS"], "sek") == b"ord-1|SELL|100000|SUCCESS|sek"
    assert signing_string(["ord-1", "SELL", None, "SUCCESS"], "sek") == b"ord-1|SELL||SUCCESS|sek"
    assert signing_string(["p", "e"], "s") == b"p|e|s"
    assert signing_string([], "s") == b"s"
    assert signing_string(["ordé"], "sé") == "ordé|sé".encode()


def test_response_fields_are_the_signed_fields_in_order() -> None:
    body = {
        "status": "SUCCESS",
        "fiatAmount": 100000.0,
        "signature": "x",
        "paidAmount": 7,
        "type": "SELL",
        "externalOrderId": "ord-1",
    }
    assert response_fields(body) == ["ord-1", "SELL", 100000.0, "SUCCESS"]
    assert response_fields({"externalOrderId": "ord-1"}) == ["ord-1", None, None, None]


# --------------------------------------------------------------------------- sign / verify


def test_sign_is_rsa_sha256_pkcs1v15_over_the_signing_string(keys: Keys) -> None:
    signature = sign(FIELDS, SECRET, keys.alix.private)
    keys.alix.public.verify(
        base64.b64decode(signature, validate=True),
        f"ord-0001|SELL|100000|SUCCESS|{SECRET}".encode(),
        PKCS1v15(),
        SHA256(),
    )
    assert sign(FIELDS, SECRET, keys.alix.private) == signature  # PKCS#1 v1.5 is deterministic
    assert len(base64.b64decode(signature)) == 256


@pytest.mark.parametrize("secret", SECRETS, ids=lambda n: n.name)
def test_verify_reports_key_and_secret_names(keys: Keys, secret: Named[str]) -> None:
    signature = sign(FIELDS, secret.value, keys.alix.private)
    assert verify(FIELDS, signature, current_keys(keys), SECRETS) == f"ALIXPAY_PUBLIC_KEY+{secret.name}"


def test_verify_against_an_independently_made_signature(keys: Keys) -> None:
    signature = raw_sign(keys.alix.private, f"ord-0001|SELL|100000|SUCCESS|{WEBHOOK_SECRET}".encode())
    got = verify(FIELDS, signature, current_keys(keys), SECRETS)
    assert got == "ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY"


@pytest.mark.parametrize(
    ("index", "value"),
    [(0, "ord-0002"), (1, "BUY"), (2, 100001), (2, 100000.5), (2, "100000.00"), (2, None), (3, "FAIL")],
)
def test_tampering_a_signed_field_fails(keys: Keys, index: int, value: Any) -> None:
    signature = sign(FIELDS, SECRET, keys.alix.private)
    tampered = list(FIELDS)
    tampered[index] = value
    assert verify(tampered, signature, current_keys(keys), SECRETS) is None
    assert verify(FIELDS, signature, current_keys(keys), SECRETS) is not None


def test_unknown_secret_fails(keys: Keys) -> None:
    signature = sign(FIELDS, "some-other-secret", keys.alix.private)
    assert verify(FIELDS, signature, rotating_keys(keys), ALL_SECRETS) is None


def test_no_candidates_fail(keys: Keys) -> None:
    signature = sign(FIELDS, SECRET, keys.alix.private)
    assert verify(FIELDS, signature, current_keys(keys), []) is None
    assert verify(FIELDS, signature, [], SECRETS) is None


def test_signature_by_another_key_fails(keys: Keys) -> None:
    signature = sign(FIELDS, SECRET, keys.partner.private)
    assert verify(FIELDS, signature, rotating_keys(keys), ALL_SECRETS) is None


@pytest.mark.parametrize("position", [0, 1, 100, 255])
def test_flipping_a_signature_bit_fails(keys: Keys, position: int) -> None:
    raw = bytearray(base64.b64decode(sign(FIELDS, SECRET, keys.alix.private)))
    raw[position] ^= 0x01
    assert verify(FIELDS, base64.b64encode(bytes(raw)).decode(), current_keys(keys), SECRETS) is None


def test_truncated_or_extended_signature_fails(keys: Keys) -> None:
    raw = base64.b64decode(sign(FIELDS, SECRET, keys.alix.private))
    for bad in (raw[:-1], raw + b"\x00", raw[:128], b"\x00" + raw[1:]):
        assert verify(FIELDS, base64.b64encode(bad).decode(), current_keys(keys), SECRETS) is None


@pytest.mark.parametrize(
    "signature",
    ["", "not base64!!", "====", "abc", "%%%%", "AAAA\n", " AAAA", "ñññ", "QUFB-QUFB_"],
)
def test_malformed_signature_is_none(keys: Keys, signature: str) -> None:
    assert verify(FIELDS, signature, current_keys(keys), SECRETS) is None


# --------------------------------------------------------------------------- rotation


def test_signature_by_the_previous_key_reports_the_previous_key(keys: Keys) -> None:
    signature = sign(FIELDS, SECRET, keys.alix_old.private)
    assert verify(FIELDS, signature, current_keys(keys), SECRETS) is None
    got = verify(FIELDS, signature, rotating_keys(keys), ALL_SECRETS)
    assert got == "ALIXPAY_PUBLIC_KEY_PREVIOUS+ALIXPAY_SECRET_KEY"


@pytest.mark.parametrize(
    ("secret", "name"),
    [
        (OLD_SECRET, "ALIXPAY_SECRET_KEY_PREVIOUS"),
        (OLD_WEBHOOK_SECRET, "ALIXPAY_WEBHOOK_SECRET_KEY_PREVIOUS"),
    ],
)
def test_signature_with_a_previous_secret_reports_it(keys: Keys, secret: str, name: str) -> None:
    signature = sign(FIELDS, secret, keys.alix.private)
    assert verify(FIELDS, signature, current_keys(keys), SECRETS) is None
    assert verify(FIELDS, signature, current_keys(keys), ALL_SECRETS) == f"ALIXPAY_PUBLIC_KEY+{name}"


def test_previous_key_and_previous_secret_together(keys: Keys) -> None:
    signature = sign(FIELDS, OLD_WEBHOOK_SECRET, keys.alix_old.private)
    got = verify(FIELDS, signature, rotating_keys(keys), ALL_SECRETS)
    assert got == "ALIXPAY_PUBLIC_KEY_PREVIOUS+ALIXPAY_WEBHOOK_SECRET_KEY_PREVIOUS"


def test_one_shot_iterables_of_secrets_are_tried_for_every_key(keys: Keys) -> None:
    signature = sign(FIELDS, WEBHOOK_SECRET, keys.alix_old.private)
    got = verify(FIELDS, signature, iter(rotating_keys(keys)), (s for s in SECRETS))
    assert got == "ALIXPAY_PUBLIC_KEY_PREVIOUS+ALIXPAY_WEBHOOK_SECRET_KEY"


# --------------------------------------------------------------------------- JSON bodies


def _body(fiat_amount_json: str, signature: str) -> bytes:
    return (
        '{"externalOrderId":"ord-0007","type":"SELL","fiatAmount":' + fiat_amount_json + ","
        '"status":"SUCCESS","paidAmount":"12.5","signature":"' + signature + '"}'
    ).encode()


@pytest.mark.parametrize(
    ("fiat_amount_json", "as_javascript"),
    [
        ("100000.0", "100000"),
        ("100000", "100000"),
        ("1E5", "100000"),
        ("1e21", "1e+21"),
        ("0.0000001", "1e-7"),
        ("1234.50", "1234.5"),
        ('"100000.00"', "100000.00"),
    ],
)
def test_json_body_verifies_against_the_javascript_rendering(
    keys: Keys, fiat_amount_json: str, as_javascript: str
) -> None:
    message = f"ord-0007|SELL|{as_javascript}|SUCCESS|{WEBHOOK_SECRET}".encode()
    signature = raw_sign(keys.alix.private, message)
    body = json.loads(_body(fiat_amount_json, signature))
    got = verify(response_fields(body), body["signature"], current_keys(keys), SECRETS)
    assert got == "ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY"


def test_json_body_with_a_changed_amount_fails(keys: Keys) -> None:
    signature = raw_sign(keys.alix.private, f"ord-0007|SELL|100000|SUCCESS|{WEBHOOK_SECRET}".encode())
    body = json.loads(_body("100000.01", signature))
    assert verify(response_fields(body), body["signature"], current_keys(keys), SECRETS) is None
    # A string amount is signed verbatim: "100000.00" is not "100000".
    body = json.loads(_body('"100000.00"', signature))
    assert verify(response_fields(body), body["signature"], current_keys(keys), SECRETS) is None


def test_unsigned_fields_do_not_affect_verification(keys: Keys) -> None:
    signature = raw_sign(keys.alix.private, f"ord-0007|SELL|100000|SUCCESS|{WEBHOOK_SECRET}".encode())
    body = json.loads(_body("100000.0", signature))
    body["paidAmount"] = "999999"  # not covered by the signature (docs/architecture.md: Trust)
    assert verify(response_fields(body), body["signature"], current_keys(keys), SECRETS) is not None
