"""The shared sandbox kit, through a minimal subclass: dispatch (methods, query, headers,
raw bytes), callback headers, control routes and loopback rules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fuspay_testkit import Receiver
from werkzeug.routing import Rule

from devkit.kit import (
    MAX_BODY,
    Reply,
    Request,
    SandboxKit,
    check_loopback_url,
    is_loopback_url,
)


class Echo(SandboxKit):
    name = "echo"
    extra_switches = {"slow": 0.0, "broken": False}

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.seen: list[Request] = []

    def _handle(self, request: Request) -> Reply:
        self.seen.append(request)
        if request.path == "/raw":
            return 202, b'{"raw":true}'
        if request.path == "/boom":
            raise RuntimeError("boom")
        return 200, {
            "method": request.method,
            "target": request.target,
            "sig": request.headers.get("x-api-signature"),
        }

    control_rules = (Rule("/orders/<order_id>/ping", methods=["POST"], endpoint="ping"),)

    def ping(self, body: dict[str, Any], order_id: str) -> Reply:
        return 200, {"pong": body, "order": order_id}

    def advance(self, order_id: str, step: Any) -> Any:
        self._orders[order_id]["steps"].append(step)


@pytest.fixture
def echo() -> Iterator[Echo]:
    with Echo() as kit:
        yield kit


def test_requests_reach_the_subclass_whole(echo: Echo) -> None:
    for method in ("GET", "POST", "PATCH"):
        resp = requests.request(
            method,
            echo.url + "/v1/orders?orderId=1&orderId=2",
            data=b'{"a":1}',
            headers={"X-Api-Signature": "c2ln"},
            timeout=5,
        )
        assert resp.json() == {"method": method, "target": "/v1/orders?orderId=1&orderId=2", "sig": "c2ln"}
    request = echo.seen[-1]
    assert request.query == {"orderId": ["1", "2"]} and request.arg("orderId") == "1"
    assert request.raw == b'{"a":1}'
    raw = requests.get(echo.url + "/raw", timeout=5)
    assert (raw.status_code, raw.content) == (202, b'{"raw":true}')
    assert requests.get(echo.url + "/boom", timeout=5).status_code == 500
    too_big = requests.post(echo.url + "/x", data=b"x" * (MAX_BODY + 1), timeout=5)
    assert too_big.status_code == 413


def test_control_routes(echo: Echo) -> None:
    base = echo.url + "/sandbox"
    pong = requests.post(base + "/orders/a%20b/ping", json={"x": 1}, timeout=5).json()
    assert pong == {"pong": {"x": 1}, "order": "a b"}
    assert requests.post(base + "/orders/a%20b/ping", data=b"[", timeout=5).status_code == 400
    assert requests.get(base + "/nothing", timeout=5).status_code == 404
    switched = requests.post(base + "/switches", json={"slow": 2, "broken": True}, timeout=5).json()
    assert switched["global"] == {
        "drop": False,
        "drop_rate": 0.0,
        "seed": None,
        "duplicate": 0,
        "delay": 0.0,
        "reorder": False,
        "slow": 2.0,
        "broken": True,
    }
    assert requests.post(base + "/switches", json={"broken": 1}, timeout=5).status_code == 400
    assert requests.post(base + "/switches", json={"slow": 601}, timeout=5).status_code == 400
    assert echo.seen == []


def test_callbacks_carry_their_headers_and_go_to_their_url() -> None:
    receiver = Receiver()
    try:
        with Echo() as kit:
            kit._orders["o-1"] = {"steps": []}
            assert kit._send_callback("o-1", "first", b"{}") == "no callback_url"
            kit.callback_url = receiver.url
            sent = kit._send_callback(
                "o-1", "created", b'{"orderId":"o-1"}', {"X-Callback-Signature": "c2ln"}
            )
            assert sent == "queued"
            assert kit._send_callback("o-1", "elsewhere", b"{}", url="https://example.com/hook") == "queued"
            assert kit.wait_idle(3)
            assert kit.deliveries == [("o-1", "created", 200), ("o-1", "elsewhere", "not loopback")]
            (post,) = receiver.posts
            assert post["headers"]["X-Callback-Signature"] == "c2ln"
            assert post["headers"]["Content-Type"] == "application/json"

            kit.autopilot("o-1", ["a", "b"], 0.0).join(5)
            assert kit.order("o-1") == {"steps": ["a", "b"]}
            with pytest.raises(KeyError):
                kit.autopilot("ghost", ["a"], 0.0)
    finally:
        receiver.close()


def test_loopback_rules() -> None:
    for url in ("http://127.0.0.1:1/x", "https://localhost/x", "http://[::1]:8/x", "http://127.9.9.9/"):
        assert is_loopback_url(url), url
    for url in (
        "http://example.com/",
        "ftp://127.0.0.1/",
        "http://10.0.0.1/",
        "127.0.0.1",
        None,
        "http://[::1",
    ):
        assert not is_loopback_url(url), url
    with pytest.raises(ValueError, match="hook must be"):
        check_loopback_url("http://example.com", "hook")
    with pytest.raises(ValueError, match="loopback"):
        Echo(host="10.0.0.1")
    with pytest.raises(ValueError, match="port"):
        Echo(port=70000)
    kit = Echo()
    with pytest.raises(RuntimeError, match="not running"):
        kit.url  # noqa: B018
    kit.stop()  # stopping a sandbox that never started is harmless
