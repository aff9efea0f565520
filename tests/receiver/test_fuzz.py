"""A property-based fuzzer over every webhook and the API (hypothesis, derandomized).

Webhooks: each example starts from a callback the provider's sandbox signed
(the sandboxes' keys, the product's signing code), mutates its JSON (hostile
values: nesting far past ``MAX_DEPTH``, integers beyond every double, NaN, lone
surrogates, NUL, control characters; keys deleted or added), its serialisation
(spacing, raw UTF-8, invalid UTF-8, bytes flipped, inserted, cut, whole-body
nesting) and its headers (content type, Changelly's signature header, anything
else), and posts it to the receiver with a real Redis behind it. Whatever comes
in: no 5xx, a JSON answer, no error or traceback in the logs, and nothing queued
for apply unless what the signature covers is exactly what the sandbox signed
(the oracle compares the signed content and the signature's bytes with the
original's; it does not call the verifier).

API: order views and reconciles with arbitrary ids (percent-encoded bytes),
creation with mutated valid requests against the sandboxes, bearer tokens right,
wrong and missing, on SQLite and PostgreSQL. No 5xx except the documented
answers about the provider (502 refused, 503 unavailable); nothing queued or
created without the token.

Bounded: ``WEBHOOK_EXAMPLES`` per provider, ``API_EXAMPLES`` per database, a
fixed derandomized seed (the same examples on every run, in CI too), no example
database.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from conftest import (
    Keys,
    alix_settings,
    changelly_settings,
    fuspay_settings,
    queued_callbacks,
)
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from scenarios import alixpay_sell, changelly_sell, fuspay_sell

from config import Settings
from devkit.alixpay.sandbox import AlixSandbox
from devkit.changelly.sandbox import ChangellySandbox
from devkit.fuspay.sandbox import FuspaySandbox
from orders.db import make_engine
from orders.providers import STATUS_MAPS, build_adapters
from orders.providers.alixpay import signing as alix_signing
from orders.providers.changelly import signing as changelly_signing
from orders.providers.fuspay import signing as fuspay_signing
from orders.providers.jsformat import js_number
from orders.providers.payload import MAX_DEPTH
from orders.store import Store
from receiver import create_app
from workers.queue import EVENTS, POLLS
from workers.stream import STREAM

WEBHOOK_EXAMPLES = 100  # per provider
API_EXAMPLES = 80  # per database
TOKEN = "fuzz-token-0123456789abcdef"
SIGNATURE_HEADER = changelly_signing.CALLBACK_SIGNATURE_HEADER
# The fields most mutations aim at: what the signature covers (Fuspay: every field)
# and, for Changelly, the fields it reads but does not sign.
SIGNED = {
    "alixpay": ("externalOrderId", "type", "fiatAmount", "status", "signature"),
    "changelly": ("orderId", "status", "externalOrderId"),
}

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# ------------------------------------------------------------------ hostile values

HOSTILE_TEXT = [
    "\ud800",
    "a\udfffb",
    "\x00",
    "a\x00b",
    "\x01\x1f\x7f",
    "\u2028\u2029",
    "💸",
    " ",
    "",
    "x" * 300,
]
# Nesting around the limit and far past what Python would recurse over.
DEPTHS = st.sampled_from([MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 520, 999, 1000, 1500, 5000])
# Raw JSON that Python's json.dumps would not write (or would write differently).
RAW_SNIPPETS = st.one_of(
    DEPTHS.map(lambda d: "[" * d + "]" * d),
    DEPTHS.map(lambda d: '{"a":' * d + "1" + "}" * d),
    st.sampled_from(["1" + "0" * 309, "-1" + "0" * 400, "1e400", "-1e999", "NaN", "Infinity", "-0", "1E+2"]),
    st.sampled_from(['"\\ud800"', '"\\u0000"', '"\\udfff\\ud800"', '"a\\u0000b"']),
)
hostile_leaves = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.sampled_from([10**309, -(10**309), 10**400, 2**64, float("inf"), float("nan"), -0.0, 1e308]),
)
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), hostile_leaves)
json_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
# Hostile first: each example has a fair chance of one of the cases a tester found.
values = st.one_of(hostile_leaves, RAW_SNIPPETS.map(lambda raw: Raw(raw)), json_values)


@dataclass(frozen=True)
class Raw:
    """A value written as this raw JSON text."""

    text: str


def serialise(body: Any, style: str) -> bytes:
    """``body`` as one of the ways a client might write it; ``Raw`` values spliced in."""
    raws: dict[str, str] = {}

    def mark(value: Any) -> Any:
        if isinstance(value, Raw):
            marker = f"__raw_{len(raws)}__"
            raws[marker] = value.text
            return marker
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    marked = mark(body)
    if style == "ascii":  # lone surrogates and NUL written as \u escapes
        text = json.dumps(marked)
    elif style == "compact":
        text = json.dumps(marked, separators=(",", ":"), ensure_ascii=False)
    else:
        text = json.dumps(marked, indent=2, ensure_ascii=False)
    for marker, raw in raws.items():
        text = text.replace(f'"{marker}"', raw)
    # surrogatepass: a lone surrogate written raw is invalid UTF-8, which is a case too.
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutated_body(draw: st.DrawFn, base: dict[str, Any], signed: tuple[str, ...]) -> bytes:
    """``base`` with up to three mutations, most aimed at the fields its signature covers."""
    body: Any = dict(base)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["signed", "signed", "signed", "set", "delete", "add", "replace-all"]))
        keys = list(body) if isinstance(body, dict) else []
        if action == "replace-all":
            body = draw(values)
        elif not isinstance(body, dict):
            continue
        elif action == "signed":
            body[draw(st.sampled_from(signed))] = draw(values)
        elif action == "set" and keys:
            body[draw(st.sampled_from(keys))] = draw(values)
        elif action == "delete" and keys:
            del body[draw(st.sampled_from(keys))]
        elif action == "add":
            body[draw(st.text(max_size=8) | st.sampled_from(HOSTILE_TEXT))] = draw(values)
    raw = serialise(body, draw(st.sampled_from(["ascii", "ascii", "compact", "indented"])))
    byte_action = draw(st.sampled_from(["none", "none", "none", "flip", "insert", "cut", "nest"]))
    if byte_action == "flip" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1 :]
    elif byte_action == "insert":
        i = draw(st.integers(0, len(raw)))
        raw = raw[:i] + draw(st.binary(min_size=1, max_size=8)) + raw[i:]
    elif byte_action == "cut" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + raw[i + draw(st.integers(1, 16)) :]
    elif byte_action == "nest":
        depth = draw(DEPTHS)
        raw = b"[" * depth + raw + b"]" * depth
    return raw


header_text = st.text(alphabet=string.printable.strip() + " ", max_size=40)
content_types = (
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "text/plain",
            "",
            "application/x-www-form-urlencoded",
        ]
    )
    | header_text
)


@st.composite
def mutated_headers(draw: st.DrawFn, base: dict[str, str]) -> tuple[str, dict[str, str]]:
    headers = dict(base)
    if SIGNATURE_HEADER in headers:
        action = draw(st.sampled_from(["keep", "keep", "drop", "replace", "flip", "pad"]))
        signature = headers[SIGNATURE_HEADER]
        if action == "drop":
            del headers[SIGNATURE_HEADER]
        elif action == "replace":
            headers[SIGNATURE_HEADER] = draw(header_text)
        elif action == "flip":
            i = draw(st.integers(0, len(signature) - 1))
            headers[SIGNATURE_HEADER] = signature[:i] + draw(st.sampled_from("A/+=x ")) + signature[i + 1 :]
        elif action == "pad":
            headers[SIGNATURE_HEADER] = f"  {signature} "
    extra = draw(
        st.dictionaries(
            st.sampled_from(["X-Forwarded-For", "X-Request-Id", "Accept", "X-Api-Key", "Cookie"]),
            header_text,
            max_size=2,
        )
    )
    headers.update(extra)
    content_type = draw(st.just("application/json") | content_types)
    return content_type, headers


# ------------------------------------------------------------------ the oracle


def b64(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value.strip(), validate=True) or None
    except (binascii.Error, ValueError):
        return None


def signed_content(provider: str, raw: bytes, headers: dict[str, str]) -> tuple[Any, ...] | None:
    """What the provider's signature covers in this request, with the signature's bytes;
    None when it has none readable. Equal to the original's: it may verify; else never."""
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            return None
        if provider == "alixpay":
            fields = tuple(js_number(f) for f in alix_signing.response_fields(data))
            return (fields, b64(data.get("signature")))
        if provider == "fuspay":
            signature = data.get("signature")
            if not isinstance(signature, str):
                return None
            return (fuspay_signing.serialise(fuspay_signing.unsigned(data)), signature.strip().lower())
        header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), None)
        return (data.get("orderId"), b64(header))
    except (ValueError, TypeError, UnicodeError, RecursionError, OverflowError):
        return None


# ------------------------------------------------------------------ the receiver


@dataclass
class Target:
    client: FlaskClient
    redis: Redis
    bases: dict[str, tuple[dict[str, Any], dict[str, str]]]
    log: list[logging.LogRecord]

    def events(self) -> list[str]:
        """The ids of the callback stream's entries and of any RQ apply job."""
        entries = [i.decode() for i, _ in self.redis.xrange(STREAM)]
        return entries + Queue(EVENTS, connection=self.redis, serializer=JSONSerializer).job_ids


class Records(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]):
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every log record of the test (hypothesis runs many examples in one test)."""
    into: list[logging.LogRecord] = []
    handler = Records(into)
    root = logging.getLogger()
    root.addHandler(handler)
    yield into
    root.removeHandler(handler)


def fuzz_settings(
    database_url: str, redis: Redis, keys: Keys, alix: str, changelly: str, fuspay: str
) -> Settings:
    port = redis.connection_pool.connection_kwargs["port"]
    return Settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        api_token=TOKEN,
        providers={
            "alixpay": alix_settings(keys, alix),
            "changelly": changelly_settings(keys, changelly),
            "fuspay": fuspay_settings(fuspay, callback_url="http://127.0.0.1:9/webhooks/fuspay"),
        },
        unverified_limit=10**6,  # the rate limit is tested apart; here every example is read
    )


def serve(settings: Settings, redis: Redis) -> Iterator[FlaskClient]:
    store = Store(make_engine(settings.database_url), STATUS_MAPS, {})
    app = create_app(settings, redis=redis, store=store, adapters=build_adapters(settings))
    yield app.test_client()  # not testing mode: an exception is the 500 a caller would see
    store.engine.dispose()


@pytest.fixture
def webhooks(
    tmp_path: Path,
    redis: Redis,
    keys: Keys,
    sandbox: AlixSandbox,
    changelly_sandbox: ChangellySandbox,
    fuspay_sandbox: FuspaySandbox,
    records: list[logging.LogRecord],
) -> Iterator[Target]:
    settings = fuzz_settings(
        f"sqlite:///{tmp_path / 'unused.sqlite3'}",  # webhooks need no database
        redis,
        keys,
        sandbox.url,
        changelly_sandbox.url,
        fuspay_sandbox.url,
    )
    # What each sandbox signs, as it would post it.
    sandbox.create_order("fz-alix", 150000)
    sandbox.advance("fz-alix", "PAYMENT_COMPLETED")
    fuspay_sandbox.create_order("fz-fus")
    changelly_order = changelly_sandbox.create_order("fz-chg")
    changelly_sandbox.advance("fz-chg", "pending")
    bases = {
        "alixpay": (sandbox.signed_order("fz-alix"), {}),
        "fuspay": (fuspay_sandbox.signed_event("fz-fus"), {}),
        "changelly": (
            changelly_sandbox.order("fz-chg"),
            {
                SIGNATURE_HEADER: changelly_signing.sign_callback(
                    changelly_order["orderId"], keys.changelly_callback.private
                )
            },
        ),
    }
    for client in serve(settings, redis):
        yield Target(client, redis, bases, records)


def check_quiet(log: list[logging.LogRecord], since: int) -> None:
    """No error and no traceback logged by this example (records from ``since`` on)."""
    loud = [r for r in log[since:] if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [r.getMessage() for r in loud][:5]


@pytest.mark.parametrize("provider", ["alixpay", "fuspay", "changelly"])
def test_fuzz_webhook(provider: str, webhooks: Target) -> None:
    base_body, base_headers = webhooks.bases[provider]
    original = signed_content(provider, json.dumps(base_body).encode(), base_headers)
    assert original is not None and original[1]
    # Positive control: the unmutated callback is accepted, so "refused" below means something.
    resp = webhooks.client.post(
        f"/webhooks/{provider}",
        data=json.dumps(base_body),
        content_type="application/json",
        headers=base_headers,
    )
    assert resp.status_code == 200, resp.get_json()
    seen = {"accepted": 0, "refused": 0}

    @settings(FUZZ, max_examples=WEBHOOK_EXAMPLES)
    @given(
        body=mutated_body(base_body, SIGNED.get(provider) or tuple(base_body)),
        head=mutated_headers(base_headers),
    )
    def example(body: bytes, head: tuple[str, dict[str, str]]) -> None:
        content_type, headers = head
        logged = len(webhooks.log)
        before = set(webhooks.events())
        resp = webhooks.client.post(
            f"/webhooks/{provider}", data=body, content_type=content_type, headers=headers
        )
        assert resp.status_code < 500, (resp.status_code, resp.get_data()[:300])
        answer = resp.get_json(silent=True)
        assert isinstance(answer, dict), resp.get_data()[:300]
        new = set(webhooks.events()) - before
        if resp.status_code == 200:
            assert answer == {"status": "accepted"}
            assert signed_content(provider, body, headers) == original, (
                "accepted what the signature does not cover"
            )
            seen["accepted"] += 1
        else:
            assert 400 <= resp.status_code < 500 and answer["code"] and answer["error"]
            assert not new, "a refused callback was queued"
            seen["refused"] += 1
        check_quiet(webhooks.log, logged)

    example()
    # Both outcomes happened: the fuzzer reached the verifier with bodies that still verify.
    assert seen["refused"] > WEBHOOK_EXAMPLES // 4 and seen["accepted"] > 0, seen
    # Everything queued for apply carries exactly the content the sandbox signed.
    for event in queued_callbacks(webhooks.redis):
        assert signed_content(provider, event.raw_body.encode(), base_headers) == original


# ------------------------------------------------------------------ the API


@pytest.fixture
def api(
    database_url: str,
    redis: Redis,
    keys: Keys,
    sandbox: AlixSandbox,
    changelly_sandbox: ChangellySandbox,
    fuspay_sandbox: FuspaySandbox,
    records: list[logging.LogRecord],
) -> Iterator[Target]:
    settings = fuzz_settings(
        database_url, redis, keys, sandbox.url, changelly_sandbox.url, fuspay_sandbox.url
    )
    for client in serve(settings, redis):
        yield Target(client, redis, {}, records)


CREATE: dict[str, Callable[[str], dict[str, Any]]] = {
    "alixpay": alixpay_sell,
    "fuspay": fuspay_sell,
    "changelly": changelly_sell,
}
# The documented 5xx answers: about the provider, never about us.
PROVIDER_ANSWERS = {502: {"provider_rejected", "provider_response_invalid"}, 503: {"provider_unavailable"}}

providers = st.sampled_from(["alixpay", "fuspay", "changelly"]) | st.text(max_size=10)
path_ids = st.one_of(
    st.sampled_from(
        [b"a\x00b", b"\x00", b"tab\tid", b"x" * 129, b"\xed\xa0\x80", b"\xff\xfe", b"..", b"%00"]
    ),
    st.from_regex(r"\Afz-[a-z0-9]{6}\Z").map(str.encode),
    st.binary(max_size=40),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
tokens = (
    st.sampled_from([f"Bearer {TOKEN}"] * 6 + ["", f"Basic {TOKEN}", "Bearer wrong", f"bearer  {TOKEN}"])
    | header_text
)


@st.composite
def api_requests(draw: st.DrawFn) -> tuple[str, str, bytes | None, str, str]:
    """(method, path, body, content type, Authorization)."""
    kind = draw(st.sampled_from(["view", "reconcile", "create", "create", "create"]))
    provider = draw(providers)
    segment = quote_from_bytes(provider.encode("utf-8", "surrogatepass"), safe="")
    order_id = quote_from_bytes(draw(path_ids), safe="")
    token = draw(tokens)
    if kind == "view":
        query = draw(st.sampled_from(["", "?raw=1", "?raw=0&x=%00"]))
        return "GET", f"/api/orders/{segment}/{order_id}{query}", None, "", token
    if kind == "reconcile":
        return "POST", f"/api/orders/{segment}/{order_id}/reconcile", None, "", token
    base = CREATE.get(provider, alixpay_sell)(draw(st.from_regex(r"\Afz-[a-z0-9]{8}\Z")))
    body = draw(mutated_body(base, tuple(base)))
    return "POST", f"/api/orders/{segment}", body, draw(st.just("application/json") | content_types), token


@pytest.mark.parametrize("run", ["api"])
def test_fuzz_api(run: str, api: Target) -> None:
    seen: dict[int, int] = {}

    @settings(FUZZ, max_examples=API_EXAMPLES)
    @given(request=api_requests())
    def example(request: tuple[str, str, bytes | None, str, str]) -> None:
        method, path, body, content_type, token = request
        headers = {"Authorization": token} if token else {}
        logged = len(api.log)
        polls = len(Queue(POLLS, connection=api.redis, serializer=JSONSerializer).job_ids)
        resp = api.client.open(
            path, method=method, data=body, content_type=content_type or None, headers=headers
        )
        seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
        answer = resp.get_json(silent=True)
        assert isinstance(answer, dict), (resp.status_code, resp.get_data()[:300])
        if resp.status_code >= 500:
            assert answer.get("code") in PROVIDER_ANSWERS.get(resp.status_code, set()), (path, answer)
        scheme, _, given = token.partition(" ")
        if scheme.lower() != "bearer" or given.strip() != TOKEN:
            # Without the token: 401, or 404/405 for what is no API route at all; and
            # nothing changes (no poll queued, no order created, no provider called).
            assert resp.status_code in (401, 404, 405), (token, resp.status_code, answer)
            assert len(Queue(POLLS, connection=api.redis, serializer=JSONSerializer).job_ids) == polls
        check_quiet(api.log, logged)

    example()
    # The fuzzer got past the token and the validation, and was refused too.
    assert seen.get(201, 0) > 0 and seen.get(400, 0) > 0 and seen.get(401, 0) > 0, seen
    assert api.events() == []
