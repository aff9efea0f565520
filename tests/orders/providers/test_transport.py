"""orders.providers.transport: one reading of every provider's HTTP answers, over real loopback HTTP."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import requests
from conftest import Keys, alix_settings
from recorders import CallbackRecorder, Loopback

from orders.errors import ProviderRateLimited, ProviderRejected, ProviderUnavailable
from orders.providers import transport
from orders.providers.alixpay.client import AlixPayClient


def answering(status: int, headers: dict[str, str] | None = None, body: bytes = b"{}") -> Loopback:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Loopback(Handler)


def test_a_redirect_is_never_followed_by_any_client(keys: Keys) -> None:
    """AliX's client used to follow a 307 and re-POST the signed request elsewhere."""
    elsewhere = CallbackRecorder()
    server = answering(307, {"Location": elsewhere.url})
    try:
        client = AlixPayClient(alix_settings(keys, server.base, timeout=2))
        with pytest.raises(ProviderRejected) as info:
            client.order_details("o-1")
        assert info.value.status == 307
        assert elsewhere.posts == []
    finally:
        server.close()
        elsewhere.close()


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (429, {"Retry-After": "7"}, ProviderRateLimited, 7.0),
        (503, {}, ProviderUnavailable, None),
        (408, {}, ProviderUnavailable, None),
        (404, {}, ProviderRejected, None),
        (302, {"Location": "http://127.0.0.1:9/"}, ProviderRejected, None),
    ],
)
def test_statuses_mean_the_same_for_every_provider(
    status: int, headers: dict[str, str], error: type[Exception], retry_after: float | None
) -> None:
    server = answering(status, headers, b'{"message":"no"}')
    try:
        with pytest.raises(error) as info:
            transport.send(
                requests.Session(),
                requests.Request("GET", server.base + "/x"),
                what="test GET /x",
                timeout=2,
                describe=lambda resp: (None, transport.message_of(transport.json_body(resp))),
            )
        assert type(info.value) is error
        assert f"HTTP {status}: no" in str(info.value)
        assert getattr(info.value, "retry_after", None) == retry_after
    finally:
        server.close()


def test_a_connection_refused_is_unavailable() -> None:
    with pytest.raises(ProviderUnavailable):
        transport.send(
            requests.Session(), requests.Request("GET", "http://127.0.0.1:9/x"), what="x", timeout=1
        )


@pytest.mark.parametrize(
    "body",
    [b'{"a":' * 1000 + b"1" + b"}" * 1000, b'{"id":"a\\u0000b"}', b'{"n":NaN}', b"\xff"],
    ids=["nested 1,000 deep", "NUL", "NaN", "not UTF-8"],
)
def test_an_answer_out_of_bounds_is_invalid_not_a_crash(body: bytes) -> None:
    """Answers are read within the bounds callbacks are read in: a poll job fails as a
    data error instead of dying of a RecursionError and being retried."""
    from orders.errors import ProviderResponseInvalid

    server = answering(200, {"Content-Type": "application/json"}, body)
    try:
        resp = transport.send(
            requests.Session(), requests.Request("GET", server.base + "/x"), what="test GET /x", timeout=2
        )
        with pytest.raises(ProviderResponseInvalid, match="not usable JSON"):
            transport.json_answer("test GET /x", resp)
        assert transport.json_body(resp) is None
    finally:
        server.close()
