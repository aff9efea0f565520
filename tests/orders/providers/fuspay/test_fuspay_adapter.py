"""Fuspay callback verification and parsing: every recipe and key mode, key rotation,
tampering, JavaScript serialisation, odd events, and what reaches the store."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fuspay_testkit import (
    CURRENT,
    PUBLIC,
    PUBLIC_OLD,
    SECRET,
    SECRET_OLD,
    fixture,
    settings_for,
    signed,
    wire,
    with_signature,
)
from sqlalchemy import select

from config import Named, PollPolicy
from orders.db import make_engine
from orders.errors import InvalidPayload, ProviderResponseInvalid, SignatureInvalid
from orders.models import Anomaly, Order
from orders.providers import STATUS_MAPS
from orders.providers.fuspay import signing
from orders.providers.fuspay.adapter import (
    FuspayAdapter,
    derived_status,
    order_from_answer,
    payment_status,
)
from orders.providers.fuspay.statuses import STATUS_MAP
from orders.states import Decision, Status
from orders.store import Store

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INIT = "event_sell_init"
RECIPES = ("hmac-sha512", "sha512-append", "sha512-prepend")
ROTATED = {
    "public_keys": (Named("FUSPAY_PUBLIC_KEY", "pk_new"), Named("FUSPAY_PUBLIC_KEY_PREVIOUS", PUBLIC_OLD)),
    "secret_keys": (Named("FUSPAY_SECRET_KEY", "sk_new"), Named("FUSPAY_SECRET_KEY_PREVIOUS", SECRET_OLD)),
}


def adapter(**kw: Any) -> FuspayAdapter:
    return FuspayAdapter(settings_for(**kw))


def parse(raw: bytes, **kw: Any):
    return adapter(**kw).parse_callback(raw, {}, AT)


# -- recipes and keys


def test_recipes_match_their_definitions() -> None:
    body = {"event_name": "event.sell.init", "fiat_amount_to_receive": 1000.0, "name": "Ọlá"}
    text = '{"event_name":"event.sell.init","fiat_amount_to_receive":1000,"name":"Ọlá"}'.encode()
    key = "pk+sk"
    assert signing.sign(body, key, "hmac-sha512") == hmac.new(key.encode(), text, hashlib.sha512).hexdigest()
    assert signing.sign(body, key, "sha512-append") == hashlib.sha512(text + key.encode()).hexdigest()
    assert signing.sign(body, key, "sha512-prepend") == hashlib.sha512(key.encode() + text).hexdigest()
    assert len({signing.sign(body, key, r) for r in RECIPES}) == 3
    with pytest.raises(ValueError, match="oracle"):
        signing.sign(body, key, "oracle")


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize(
    ("key_mode", "key", "name"),
    [
        ("public+secret", PUBLIC + SECRET, CURRENT),
        ("secret", SECRET, "FUSPAY_SECRET_KEY"),
    ],
)
def test_each_recipe_and_key_mode_verifies(recipe: str, key_mode: str, key: str, name: str) -> None:
    raw = wire(signed(fixture(INIT), key, recipe))
    assert parse(raw, recipe=recipe, key_mode=key_mode).verified_by == name
    for other in RECIPES:
        if other != recipe:
            with pytest.raises(SignatureInvalid):
                parse(raw, recipe=other, key_mode=key_mode)
    other_mode = "secret" if key_mode == "public+secret" else "public+secret"
    with pytest.raises(SignatureInvalid):
        parse(raw, recipe=recipe, key_mode=other_mode)


@pytest.mark.parametrize("key", [SECRET + PUBLIC, PUBLIC, "", PUBLIC + SECRET + " "], ids=repr)
def test_other_key_material_fails(key: str) -> None:
    with pytest.raises(SignatureInvalid, match="does not verify"):
        parse(wire(signed(fixture(INIT), key)))


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("pk_new" + "sk_new", "FUSPAY_PUBLIC_KEY+FUSPAY_SECRET_KEY"),
        (PUBLIC_OLD + "sk_new", "FUSPAY_PUBLIC_KEY_PREVIOUS+FUSPAY_SECRET_KEY"),
        ("pk_new" + SECRET_OLD, "FUSPAY_PUBLIC_KEY+FUSPAY_SECRET_KEY_PREVIOUS"),
        (PUBLIC_OLD + SECRET_OLD, "FUSPAY_PUBLIC_KEY_PREVIOUS+FUSPAY_SECRET_KEY_PREVIOUS"),
    ],
)
def test_previous_keys_still_verify_and_are_named(key: str, name: str) -> None:
    assert parse(wire(signed(fixture(INIT), key)), **ROTATED).verified_by == name


@pytest.mark.parametrize(
    ("key", "name"), [("sk_new", "FUSPAY_SECRET_KEY"), (SECRET_OLD, "FUSPAY_SECRET_KEY_PREVIOUS")]
)
def test_previous_secret_in_secret_mode(key: str, name: str) -> None:
    assert parse(wire(signed(fixture(INIT), key)), key_mode="secret", **ROTATED).verified_by == name


def test_candidate_keys_current_first() -> None:
    names = [k.name for k in signing.candidate_keys(settings_for(**ROTATED))]
    assert names == [
        "FUSPAY_PUBLIC_KEY+FUSPAY_SECRET_KEY",
        "FUSPAY_PUBLIC_KEY+FUSPAY_SECRET_KEY_PREVIOUS",
        "FUSPAY_PUBLIC_KEY_PREVIOUS+FUSPAY_SECRET_KEY",
        "FUSPAY_PUBLIC_KEY_PREVIOUS+FUSPAY_SECRET_KEY_PREVIOUS",
    ]


def _paths(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, inner in value.items():
        if isinstance(inner, dict):
            yield from _paths(inner, (*prefix, key))
        else:
            yield (*prefix, key)


CLOSE = fixture("sell_event_close__concrete_from_json5")


@pytest.mark.parametrize("path", list(_paths(CLOSE)), ids=".".join)
def test_tampering_with_any_field_fails(path: tuple[str, ...]) -> None:
    body = signed(CLOSE)
    assert parse(wire(body)).provider_status == "sell.event.close"
    forged = copy.deepcopy(body)
    target = forged
    for key in path[:-1]:
        target = target[key]
    old = target[path[-1]]
    target[path[-1]] = "forged" if old != "forged" else "other"
    with pytest.raises(SignatureInvalid):
        parse(wire(forged))


def test_added_or_reordered_fields_fail() -> None:
    body = signed(fixture(INIT))
    with pytest.raises(SignatureInvalid):
        parse(wire({**body, "extra": 1}))
    reordered = {"partner_order_id": body["partner_order_id"], **body}
    assert list(reordered) != list(body)
    with pytest.raises(SignatureInvalid):
        parse(wire(reordered))


def test_signature_case_and_position_do_not_matter() -> None:
    body = signed(fixture("event_sell_received_fiat_kyc_error__fixed_double_comma"))
    assert list(body)[-4:] == ["signature", "default_kyc_url", "message", "kyc_error_type"]
    upper = {**body, "signature": body["signature"].upper()}
    assert parse(wire(upper)).verified_by == CURRENT
    first = {"signature": body["signature"], **body}
    assert next(iter(first)) == "signature"
    assert parse(wire(first)).verified_by == CURRENT


# -- JavaScript serialisation


def test_a_float_amount_is_signed_as_javascript_renders_it() -> None:
    """Fuspay (Node) signs JSON.stringify(body): 1000.0 is "1000", 100.50 is "100.5"."""
    raw = (
        '{"event_name":"event.sell.init","partner_order_id":"js-1",'
        '"fiat_amount_to_receive":1000.0,"crypto_amount_to_sell":100.50,"exchange_rate":1e1}'
    )
    as_node = '{"event_name":"event.sell.init","partner_order_id":"js-1","fiat_amount_to_receive":1000,"crypto_amount_to_sell":100.5,"exchange_rate":10}'
    key = (PUBLIC + SECRET).encode()
    good = hmac.new(key, as_node.encode(), hashlib.sha512).hexdigest()
    python_style = json.dumps(json.loads(raw), separators=(",", ":"))
    assert python_style != as_node  # Python would render 1000.0 and 100.5 differently
    bad = hmac.new(key, python_style.encode(), hashlib.sha512).hexdigest()

    event = parse(raw[:-1].encode() + f',"signature":"{good}"}}'.encode())
    assert (event.fiat_amount, event.crypto_amount) == ("1000", "100.5")
    with pytest.raises(SignatureInvalid):
        parse(raw[:-1].encode() + f',"signature":"{bad}"}}'.encode())


def test_whitespace_and_escapes_on_the_wire_do_not_matter() -> None:
    body = signed({**fixture(INIT), "note": "Ọlá \u2028 ✓"})
    pretty = json.dumps(body, indent=4, ensure_ascii=True).encode()
    assert b"\\u1ecc" in pretty
    assert parse(pretty).verified_by == CURRENT


# -- payload problems


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        (b"\xff\xfe", []),
        (b"not json", []),
        (b'["event.sell.init"]', []),
        (b'{"signature":"ab"}', ["event_name", "partner_order_id"]),
        (b'{"event_name":"event.sell.init","partner_order_id":42,"signature":"ab"}', ["partner_order_id"]),
        (b'{"event_name":"","partner_order_id":"x","signature":"ab"}', ["event_name"]),
        (b'{"event_name":null,"signature":"ab"}', ["event_name", "partner_order_id"]),
    ],
)
def test_invalid_payloads_name_their_fields(raw: bytes, fields: list[str]) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse(raw)
    assert info.value.fields == fields


@pytest.mark.parametrize("signature", [None, "", 12, ["ab"]], ids=repr)
def test_missing_signature(signature: Any) -> None:
    body = {**fixture(INIT), "signature": signature}
    if signature is None:
        del body["signature"]
    with pytest.raises(SignatureInvalid):
        parse(wire(body))


def test_truncated_sample_signature_fails() -> None:
    """The seed's signatures are 67-107 hex characters (doc bug F-6)."""
    body = with_signature(
        fixture(INIT),
        "62f1665caaac7e1084d3100ba41cbc262ea71c5c15dcc329b1e5d13076027e8ad446eccd3f87e7fcd0af1459e8",
    )
    with pytest.raises(SignatureInvalid):
        parse(wire(body))


def test_a_verified_body_with_an_unreadable_amount_is_invalid() -> None:
    body = signed({**fixture(INIT), "fiat_amount_to_receive": "lots"})
    with pytest.raises(InvalidPayload) as info:
        parse(wire(body))
    assert info.value.fields == ["fiat_amount_to_receive"]


# -- odd events


def test_unknown_event_name_passes_through() -> None:
    event = parse(wire(signed({**fixture(INIT), "event_name": "event.sell.received.fiat_partial"})))
    assert event.provider_status == "event.sell.received.fiat_partial"
    assert event.dedup_key == "event:event.sell.received.fiat_partial"
    assert event.kind == "sell"
    assert STATUS_MAP.lookup(event.provider_status) is None


@pytest.mark.parametrize(
    ("meta", "status"),
    [
        ({"status": "refunded"}, "sell.event.close"),
        ({"status": "Refunded"}, "sell.event.close"),
        ({"status": "pending"}, "sell.event.close:pending"),
        ({"status": "failed", "message": "refund failed"}, "sell.event.close:failed"),
        ({}, "sell.event.close:<missing>"),
        (None, "sell.event.close:<missing>"),
    ],
)
def test_close_is_a_refund_only_when_meta_data_says_refunded(meta: Any, status: str) -> None:
    body = {**CLOSE, "meta_data": meta}
    event = parse(wire(signed(body)))
    assert event.provider_status == status
    assert (STATUS_MAP.lookup(status) is not None) is (status == "sell.event.close")


@pytest.mark.parametrize(
    ("value", "normal"),
    [
        ("Pending", "PENDING"),
        ("paid", "PAID"),
        ("Cancelled", "CANCELED"),
        ("CANCELLED", "CANCELED"),
        ("canceled", "CANCELED"),
        ("Completed", "COMPLETED"),
        (" started ", "STARTED"),
        ("on_review", "ON_REVIEW"),
        ("", None),
        (None, None),
        (3, None),
    ],
)
def test_payment_status_normalisation(value: Any, normal: str | None) -> None:
    assert payment_status(value) == normal


def test_order_hint() -> None:
    a = adapter()
    assert a.order_hint(wire(fixture(INIT))) == "BETA-AXIS-SELL-NGN-0004001"
    for raw in (b"nope", b"[]", b'{"partner_order_id":7}', b'{"partner_order_id":"' + b"x" * 129 + b'"}'):
        assert a.order_hint(raw) is None
    assert a.order_hint(b'{"partner_order_id":"a\\nb"}') is None


# -- GetOrder data, read defensively


@pytest.mark.parametrize(
    ("kind", "fiat", "crypto", "extra", "status"),
    [
        ("sell", "PENDING", "PENDING", {}, "event.sell.init"),
        ("sell", "STARTED", "PAID", {}, "event.sell.received.crypto"),
        ("sell", "Started", "paid", {"kyc_error_type": "NO_KYC"}, "event.sell.received.fiat_kyc_error"),
        ("sell", "PAID", "PAID", {}, "event.sell.credited.fiat"),
        ("sell", "COMPLETED", "PAID", {}, "event.sell.credited.fiat"),
        ("sell", "CANCELED", "PENDING", {}, "event.sell.error"),
        ("sell", "Cancelled", "PAID", {}, "event.sell.error"),
        ("sell", "CANCELED", "PAID", {"meta_data": {"status": "refunded"}}, "sell.event.close"),
        ("buy", "PENDING", "PENDING", {}, "event.buy.init"),
        ("buy", "PAID", "STARTED", {}, "event.buy.received.fiat"),
        ("buy", "PAID", "COMPLETED", {}, "event.buy.credited.crypto"),
        ("buy", "CANCELED", "CANCELED", {}, "event.buy.error"),
    ],
)
def test_derived_status(kind: str, fiat: str, crypto: str, extra: dict[str, Any], status: str) -> None:
    data = {"fiat_payment_status": fiat, "crypto_payment_status": crypto, **extra}
    assert derived_status(data, kind) == status


def test_order_from_answer_shapes() -> None:
    mine = {"partner_order_id": "o-1", "fiat_payment_status": "PENDING"}
    other = {"partner_order_id": "o-2"}
    assert order_from_answer({"data": mine}, "o-1", "p1") == mine
    assert order_from_answer({"data": [mine]}, "o-1", "p1") == mine
    assert order_from_answer({"data": [other, mine]}, "o-1", "p1") == mine
    assert order_from_answer({"data": {"fuspay_order_ref": "o-1_p1"}}, "o-1", "p1") == {
        "fuspay_order_ref": "o-1_p1",
        "partner_order_id": "o-1",
    }
    for empty in ({"data": None}, {"data": []}, {"data": {}}, {"success": True}):
        assert order_from_answer(empty, "o-1", "p1") is None
    for bad in ({"data": other}, {"data": [other]}, {"data": [mine, mine]}, {"data": "o-1"}, ["o-1"]):
        with pytest.raises(ProviderResponseInvalid):
            order_from_answer(bad, "o-1", "p1")


# -- through the store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store(make_engine(database_url), STATUS_MAPS, {"fuspay": PollPolicy(backoff=(10,), horizon=3600)})
    yield s
    s.engine.dispose()


def test_events_in_the_store(store: Store) -> None:
    a = adapter()
    init = a.parse_callback(wire(signed(fixture(INIT))), {}, AT)
    close = {**CLOSE, "meta_data": {**CLOSE["meta_data"], "status": "pending"}}
    not_refund = a.parse_callback(wire(signed(close)), {}, AT)
    received = a.parse_callback(wire(signed(fixture("event_sell_received_crypto"))), {}, AT)

    outcomes = [store.apply([e])[0] for e in (init, init, not_refund, received)]

    assert [o.decision for o in outcomes] == [
        Decision.APPLIED,
        Decision.DUPLICATE,
        Decision.UNKNOWN_STATUS,
        Decision.APPLIED,
    ]
    assert outcomes[-1].status is Status.PAYMENT_RECEIVED
    with store.engine.connect() as conn:
        kinds = conn.execute(select(Anomaly.kind)).scalars().all()
        details = conn.execute(select(Order.details)).scalar_one()
    assert kinds == ["unknown_status"]
    assert details["tx_hash"] == fixture("event_sell_received_crypto")["seller_crypto_txn_hash"]
    assert details["crypto_payment_status"] == "PAID"
    assert "Avis" not in json.dumps(details) and "0123456789" not in json.dumps(details)
