"""The demo partner of ``make run``: real HTTP on 127.0.0.1, notifications signed by
rampwatch's own delivery code (``workers.notify.signature_headers``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from devkit.partner import DemoPartner, new_secret
from workers.notify import signature_headers


@pytest.fixture
def partner(tmp_path: Path) -> Iterator[DemoPartner]:
    with DemoPartner(new_secret(), tmp_path / "dev" / "notifications.jsonl") as p:
        yield p


def body(version: int, status: str, order: str = "o-1") -> str:
    data = {"provider": "alixpay", "external_order_id": order, "version": version, "status": status}
    return json.dumps({"type": "order.status_changed", "timestamp": "2026-11-28T00:00:00Z", "data": data})


def post(partner: DemoPartner, msg_id: str, text: str, secrets: list[str] | None = None) -> requests.Response:
    headers = signature_headers(msg_id, text, secrets or [partner.secret], datetime.now(UTC))
    return requests.post(
        partner.url, data=text, headers={**headers, "Content-Type": "application/json"}, timeout=5
    )


def lines(partner: DemoPartner) -> list[dict]:
    return [json.loads(line) for line in partner.log_path.read_text().splitlines()]


def test_a_verified_notification_is_logged_as_one_json_line(partner: DemoPartner) -> None:
    assert post(partner, "msg_1", body(1, "AWAITING_PAYMENT")).status_code == 200
    (line,) = lines(partner)
    assert line["webhook_id"] == "msg_1" and line["in_order"] is True
    assert line["notification"]["data"]["status"] == "AWAITING_PAYMENT"
    assert partner.statuses("alixpay o-1") == ["AWAITING_PAYMENT"]


def test_a_bad_signature_is_refused_and_not_logged(partner: DemoPartner) -> None:
    assert post(partner, "msg_1", body(1, "SUCCESS"), secrets=[new_secret()]).status_code == 400
    unsigned = requests.post(partner.url, data=body(1, "SUCCESS"), timeout=5)
    assert unsigned.status_code == 400
    assert lines(partner) == [] and partner.refused == 2
    assert partner.summary() == (
        ["0 notifications verified, 2 refused (bad signature), every order in version order"],
        True,
    )


def test_a_rotation_verifies_with_either_signature(partner: DemoPartner) -> None:
    assert (
        post(partner, "msg_1", body(1, "SUCCESS"), secrets=[new_secret(), partner.secret]).status_code == 200
    )
    assert len(lines(partner)) == 1


def test_versions_out_of_order_are_reported_and_a_retry_taken_once(partner: DemoPartner) -> None:
    assert post(partner, "msg_2", body(2, "PROCESSING")).status_code == 200
    assert post(partner, "msg_2", body(2, "PROCESSING")).status_code == 200  # our answer was lost
    assert post(partner, "msg_1", body(1, "AWAITING_PAYMENT")).status_code == 200
    assert post(partner, "msg_9", body(1, "AWAITING_PAYMENT", order="o-2")).status_code == 200
    assert [line["in_order"] for line in lines(partner)] == [True, False, True]
    summary, in_order = partner.summary()
    assert in_order is False
    assert summary == [
        "alixpay o-1: PROCESSING v2, AWAITING_PAYMENT v1",
        "alixpay o-2: AWAITING_PAYMENT v1",
        "3 notifications verified; OUT OF ORDER: alixpay o-1",
    ]


def test_in_order_summary_and_waiting_for_a_status(partner: DemoPartner) -> None:
    stop = threading.Event()
    assert not partner.wait_for(["alixpay o-1"], "SUCCESS", 0.2, stop)
    timer = threading.Timer(0.2, lambda: post(partner, "msg_2", body(2, "SUCCESS")))
    post(partner, "msg_1", body(1, "AWAITING_PAYMENT"))
    timer.start()
    assert partner.wait_for(["alixpay o-1"], "SUCCESS", 5, stop)
    timer.join()
    assert partner.summary() == (
        [
            "alixpay o-1: AWAITING_PAYMENT v1, SUCCESS v2",
            "2 notifications verified, every order in version order",
        ],
        True,
    )


def test_other_paths_and_methods_are_refused(partner: DemoPartner) -> None:
    assert requests.get(partner.url, timeout=5).status_code == 405
    assert requests.post(partner.url.replace("/notifications", "/other"), timeout=5).status_code == 404


def test_it_binds_only_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        DemoPartner(new_secret(), tmp_path / "n.jsonl", host="0.0.0.0")  # noqa: S104 (refused)
