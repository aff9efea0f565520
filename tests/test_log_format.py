"""Log lines: text or JSON, ids attached, RQ quiet, personal data masked on every path.

The last tests run a real flow over the whole stack (API creation with a bank account,
sandbox IPNs, a Fuspay event carrying an e-mail and a phone, a forged callback, a poll,
a notification to the partner, failing jobs) with every logger captured at DEBUG
through ``configure_logging``'s own handler, in both formats, and scan the output.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest
import requests
from conftest import Stack
from hypothesis import example, given, settings
from hypothesis import strategies as st
from notify_receiver import PartnerReceiver
from rq import Queue
from rq.serializers import JSONSerializer

from config import Named
from config.logs import (
    CONTEXT_FIELDS,
    QUIET_LOGGERS,
    _masked,
    configure_logging,
    log_context,
    mask,
    mask_data,
)
from orders.providers.fuspay.signing import sign, unsigned
from orders.providers.jsformat import js_stringify
from workers.queue import EVENTS

ACCOUNT = "9988776655443"
EMAIL = "ada.obi@example.com"
PHONE = "+2348099887766"
PERSONAL = (ACCOUNT, EMAIL, PHONE)
NOTIFY_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


# ------------------------------------------------------------------ the masker


@pytest.mark.parametrize(
    ("text", "hidden", "shown"),
    [
        ("account 0123456789.", "0123456789", "****6789"),
        ("acct 0123 4567 8901 given", "0123 4567 8901", "****8901"),
        ('{"account_number": "0123498765"}', "0123498765", "****8765"),
        ("('0123498765',)", "0123498765", "****8765"),
        ("from ada.obi@example.com:", "ada.obi@example.com", "***@***"),
        ("q=ada.obi%40example.com&x=1", "ada.obi%40example.com", "***@***"),
        ("call +2348099887766 now", "+2348099887766", "+****7766"),
        ("tel +44 20 7946 0958", "+44 20 7946 0958", "+****0958"),
        ("iban GB82WEST12345698765432", "GB82WEST12345698765432", "****5432"),
        ("national 08099887766", "08099887766", "****7766"),
    ],
)
def test_personal_values_are_masked(text: str, hidden: str, shown: str) -> None:
    masked = mask(text)
    assert hidden not in masked and shown in masked


@pytest.mark.parametrize(
    "text",
    [
        "at 2026-01-02 10:11:12,345",
        "2026-01-02T10:11:12.345+00:00",
        "job poll-alixpay-3f2a12345678901bcd0011223344556677",
        "request 1234567890abcdef1234567890abcdef",
        "order-12345678 v12 msg_42 order 4711",
        "fiat 1000000.00 USDT",
        "status=PROCESSING_TOKEN_TRANSFER",
    ],
)
def test_ids_times_and_amounts_are_kept(text: str) -> None:
    assert mask(text) == text


# Text made of what the four patterns look for (capitals, digits, "@", "%40", "+",
# spaces, separators) and what they do not.
_MASKABLE = st.lists(
    st.one_of(
        st.sampled_from([*"AB GZ09@%4+-._ ()abxyz", "%40", ".com", "  ", "GB82", "+"]),
        st.integers(0, 10**12).map(str),  # digit runs of 1 to 13: either side of 7 and 8
    ),
    max_size=12,
).map("".join)


@given(_MASKABLE)
@settings(max_examples=3000, deadline=None)
# Each found by one of the pre-check's alternatives alone.
@example("a@b.co")
@example("x%40y.com")
@example("GB82WESTABCDEFGH")
@example("+1234567")
@example("1234 5678")
def test_mask_skips_only_text_none_of_its_patterns_can_match(text: str) -> None:
    """``mask`` leaves text with no "@", "%40", two capitals and two digits, "+" and a
    digit, or eight digits as it is, without its four passes: whatever the text, the
    same result as the four passes."""
    assert mask(text) == _masked(text)


def test_mask_data_walks_nested_values() -> None:
    data = {"a": [EMAIL, {"b": (PHONE, 3)}], "c": ACCOUNT.encode()}
    masked = mask_data(data)
    assert all(value not in json.dumps(masked) for value in PERSONAL)
    assert masked["a"][1]["b"][1] == 3


# ------------------------------------------------------------------ formats


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {
        n: logging.getLogger(n).level for n in (*QUIET_LOGGERS, "rampwatch", "alembic.runtime.migration")
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def _capture(fmt: str, level: str = "DEBUG") -> io.StringIO:
    out = io.StringIO()
    configure_logging(level, fmt, stream=out)
    return out


def test_json_lines_carry_the_ids_and_only_the_declared_fields(restore_logging: None) -> None:
    out = _capture("json")
    log = logging.getLogger("rampwatch.test")
    with log_context(request_id="req-0001abcd", provider="alixpay"):
        with log_context(order_id="o-1", job_id="event-alixpay-abc", entry_id="1700000000000-0"):
            log.info("applied %s for %s", "SUCCESS", EMAIL, extra={"arguments": [{"phone": PHONE}]})
        log.warning("after the job")
    try:
        raise RuntimeError(f"account {ACCOUNT} refused")
    except RuntimeError:
        log.exception("failed")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["applied SUCCESS for ***@***", "after the job", "failed"]
    first, second, third = lines
    assert set(first) == {"time", "level", "logger", "message", *CONTEXT_FIELDS}
    assert (
        first["request_id"],
        first["provider"],
        first["order_id"],
        first["job_id"],
        first["entry_id"],
    ) == (
        "req-0001abcd",
        "alixpay",
        "o-1",
        "event-alixpay-abc",
        "1700000000000-0",
    )
    assert (
        first["level"] == "INFO" and first["logger"] == "rampwatch.test" and first["time"].endswith("+00:00")
    )
    assert "order_id" not in second and second["request_id"] == "req-0001abcd"
    assert "request_id" not in third and "****5443" in third["exc_info"]
    assert all(value not in out.getvalue() for value in PERSONAL)


def test_text_lines_name_the_ids(restore_logging: None) -> None:
    out = _capture("text", "INFO")
    with log_context(provider="fuspay", order_id="pii-1"):
        logging.getLogger("rampwatch.test").info("polled: phone %s", PHONE)
    logging.getLogger("rampwatch.test").debug("not at INFO")
    (line,) = out.getvalue().splitlines()
    assert line.endswith("INFO rampwatch.test: polled: phone +****7766 [provider=fuspay order=pii-1]")


def test_rq_is_held_at_warning_whatever_the_level(restore_logging: None, stack: Stack) -> None:
    out = _capture("text", "DEBUG")
    assert all(logging.getLogger(n).getEffectiveLevel() == logging.WARNING for n in QUIET_LOGGERS)
    stack.runtime.queues.enqueue_sweep()
    stack.drain()  # RQ's work() sets its loggers to the level it is given: ours holds
    assert logging.getLogger("rq.worker").level == logging.WARNING
    assert " rq." not in out.getvalue()
    assert logging.getLogger("rampwatch").getEffectiveLevel() == logging.DEBUG


def test_the_request_id_is_taken_when_sane_and_echoed(restore_logging: None, stack: Stack) -> None:
    out = _capture("json", "INFO")
    sane = "3f2a9c1e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"
    resp = requests.get(stack.base + "/healthz", headers={"X-Request-ID": sane}, timeout=5)
    assert resp.headers["X-Request-ID"] == sane
    for insane in ("x", "a b c d e f g h", "z" * 300):
        got = requests.get(stack.base + "/healthz", headers={"X-Request-ID": insane}, timeout=5)
        assert got.headers["X-Request-ID"] != insane and len(got.headers["X-Request-ID"]) == 32
    forged = requests.post(
        stack.base + "/webhooks/fuspay",
        data=_fuspay_body("rid-1", signed=False),
        headers={"Content-Type": "application/json", "X-Request-ID": "req-forged-0001"},
        timeout=5,
    )
    assert forged.status_code == 401 and forged.headers["X-Request-ID"] == "req-forged-0001"
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    refused = [x for x in lines if x["logger"] == "rampwatch.receiver"]
    assert refused and all(x.get("request_id") == "req-forged-0001" for x in refused)
    assert all(x.get("provider") == "fuspay" for x in refused)


# ------------------------------------------------------------------ the flow, scanned


def _fuspay_body(order_id: str, *, signed: bool = True) -> bytes:
    body = {
        "transactional_kyc": {"email": EMAIL, "phone": PHONE, "first_name": "Ada"},
        "seller_fiat_account": {"account_number": ACCOUNT},
        "event_name": "event.sell.init",
        "partner_order_id": order_id,
        "fuspay_order_ref": f"{order_id}_p176517",
        "fiat_amount_to_receive": 1000,
        "crypto_amount_to_sell": 100,
        "chain": "usdt-trc20",
    }
    key = "pk_partner_test_0001sk_partner_test_0001" if signed else "wrong-key"
    body["signature"] = sign(unsigned(body), key, "hmac-sha512")
    return js_stringify(body).encode()


def _run_flow(stack: Stack) -> None:
    with PartnerReceiver([NOTIFY_SECRET]) as partner:
        pushing = replace(
            stack.settings,
            notify_url=partner.url,
            notify_secrets=(Named("NOTIFY_SECRET", NOTIFY_SECRET),),
            notify_timeout=1.0,
        )
        stack.runtime.settings = pushing
        stack.web.settings = pushing
        resp = stack.api(
            "POST",
            "/api/orders/alixpay",
            json={
                "externalOrderId": "log-1",
                "currency": "USDT",
                "network": "TRC20",
                "fiatAmount": 1_000_000,
                "bankCode": "VCB",
                "bankAccountNumber": ACCOUNT,
                "bankAccountName": "NGUYEN VAN A",
            },
        )
        assert resp.status_code == 201, resp.text
        for status in ("PAYMENT_COMPLETED", "SUCCESS"):
            stack.sandbox.advance("log-1", status)
        assert stack.sandbox.wait_idle(10)
        headers = {"Content-Type": "application/json"}
        ok = requests.post(
            stack.base + "/webhooks/fuspay", data=_fuspay_body("pii-1"), headers=headers, timeout=5
        )
        assert ok.status_code == 200, ok.text
        bad = requests.post(
            stack.base + "/webhooks/fuspay",
            data=_fuspay_body("pii-1", signed=False),
            headers=headers,
            timeout=5,
        )
        assert bad.status_code == 401
        stack.drain()
        stack.runtime.queues.enqueue_poll("alixpay", "log-1", "operator")
        # A job that fails with personal data in its error (unknown fields named by the payload).
        Queue(EVENTS, connection=stack.runtime.redis, serializer=JSONSerializer).enqueue(
            "workers.jobs.apply_event", {"v": 2, EMAIL: PHONE, ACCOUNT: 1}, job_id="broken-job-1"
        )
        stack.drain()
        assert partner.wait_for(1)
    assert stack.runtime.store.order_view("alixpay", "log-1").status == "SUCCESS"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_whole_flow_logs_no_personal_data(restore_logging: None, stack: Stack, fmt: str) -> None:
    out = _capture(fmt, "DEBUG")
    _run_flow(stack)
    text = out.getvalue()
    assert len(text.splitlines()) > 20, text  # the flow was logged at all
    for value in PERSONAL:
        assert value not in text, value
    # The failing job's error reached the log, masked: the masker is on the path.
    assert "broken-job-1" in text and "***@***" in text
    if fmt == "text":
        return
    lines = [json.loads(line) for line in text.splitlines()]
    accepted = [x for x in lines if x["logger"] == "rampwatch.receiver" and "accepted" in x["message"]]
    assert {(x["provider"], x["order_id"]) for x in accepted} >= {("fuspay", "pii-1"), ("alixpay", "log-1")}
    assert all(len(x["request_id"]) >= 8 for x in accepted)
    applied = [x for x in lines if x["logger"] == "rampwatch.drain" and x["message"].startswith("applied")]
    assert applied and all(re.fullmatch(r"\d+-\d+", x["entry_id"]) and x.get("order_id") for x in applied)
    polled = [x for x in lines if x["logger"] == "rampwatch.jobs" and x["message"].startswith("polled")]
    assert any(x["job_id"].startswith("poll-alixpay-") and x["order_id"] == "log-1" for x in polled)
    failed = [x for x in lines if "broken-job-1" in x["message"] and x["level"] == "ERROR"]
    assert failed and "arguments" not in failed[0]
