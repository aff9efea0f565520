"""Shared pieces of the Changelly tests: keys, settings, a callback receiver, a canned server.

Keys are PKCS#1 RSA keys, made once per test process (Changelly issues PKCS#1).
``Receiver`` stands in for rampwatch's webhook endpoint; ``Canned`` is a loopback
server that answers whatever a test tells it to (fixture bodies, error codes)
and records the requests it got. Both bind 127.0.0.1 only.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from recorders import CallbackRecorder, Loopback

from config import Named, PollPolicy
from orders.providers.changelly.settings import ChangellySettings

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "changelly"
API_KEY = "changelly-test-api-key"


@dataclass(frozen=True)
class ChangellyKeys:
    partner: RSAPrivateKey  # ours: signs API requests
    callback: RSAPrivateKey  # Changelly's: signs callbacks
    callback_old: RSAPrivateKey  # Changelly's previous callback key (rotation)
    other: RSAPrivateKey  # nobody's


@functools.cache
def keys() -> ChangellyKeys:
    def gen() -> RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return ChangellyKeys(partner=gen(), callback=gen(), callback_old=gen(), other=gen())


def settings(base_url: str, *, timeout: float = 3.0, **overrides: Any) -> ChangellySettings:
    k = keys()
    values: dict[str, Any] = dict(
        api_key=API_KEY,
        private_key=Named("CHANGELLY_PRIVATE_KEY", k.partner),
        callback_public_keys=(
            Named("CHANGELLY_CALLBACK_PUBLIC_KEY", k.callback.public_key()),
            Named("CHANGELLY_CALLBACK_PUBLIC_KEY_PREVIOUS", k.callback_old.public_key()),
        ),
        base_url=base_url,
        poll=PollPolicy(backoff=(1, 2, 5), horizon=3600),
        timeout=timeout,
    )
    values.update(overrides)
    return ChangellySettings(**values)


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture(name: str) -> Any:
    return json.loads(fixture_bytes(name))


class Receiver(CallbackRecorder):
    """Records the callbacks the sandbox posts."""

    path = "/webhooks/changelly"

    def statuses(self) -> list[str]:
        return [b["status"] for b in self.bodies()]


class Canned(Loopback):
    """Answers every request with ``reply = (status, body bytes, headers)``; records requests."""

    def __init__(self, status: int = 200, body: bytes = b"{}", headers: Mapping[str, str] | None = None):
        self.reply: tuple[int, bytes, Mapping[str, str]] = (status, body, headers or {})
        self.requests: list[dict[str, Any]] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                canned.requests.append(
                    {"method": self.command, "target": self.path, "headers": dict(self.headers), "raw": raw}
                )
                status, body, extra = canned.reply
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)
