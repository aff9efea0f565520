"""Shared helpers of the Fuspay tests: keys, settings, fixtures signed at test time, a
recording callback receiver. Nothing here talks to anything but 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from config import FuspaySettings, Named, PollPolicy
from orders.providers.fuspay import signing
from orders.providers.jsformat import js_stringify

PARTNER = "p176517"
PUBLIC = "pk_partner_test_0001"
SECRET = "sk_partner_test_0001"
PUBLIC_OLD = "pk_partner_test_0000"
SECRET_OLD = "sk_partner_test_0000"
FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "fuspay"
CURRENT = "FUSPAY_PUBLIC_KEY+FUSPAY_SECRET_KEY"


def settings_for(
    base_url: str = "http://127.0.0.1:9",
    *,
    recipe: str = "hmac-sha512",
    key_mode: str = "public+secret",
    public_keys: tuple[Named[str], ...] | None = None,
    secret_keys: tuple[Named[str], ...] | None = None,
    callback_url: str | None = "http://127.0.0.1:9/webhooks/fuspay",
    timeout: float = 3.0,
) -> FuspaySettings:
    return FuspaySettings(
        partner_id=PARTNER,
        public_keys=public_keys or (Named("FUSPAY_PUBLIC_KEY", PUBLIC),),
        secret_keys=secret_keys or (Named("FUSPAY_SECRET_KEY", SECRET),),
        base_url=base_url,
        signature_recipe=recipe,
        signature_key=key_mode,
        callback_url=callback_url,
        poll=PollPolicy(backoff=(1, 2, 5), horizon=3600),
        timeout=timeout,
    )


def fixture(stem: str) -> dict[str, Any]:
    """A fixture body (no signature), key order as in the file."""
    return json.loads((FIXTURES / f"{stem}.json").read_text(encoding="utf-8"))


def fixture_stems() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def with_signature(body: Mapping[str, Any], signature: str) -> dict[str, Any]:
    """``body`` with ``signature`` where Fuspay's samples put it: after transactional_kyc."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key == "signature":
            continue
        out[key] = value
        if key == "transactional_kyc":
            out["signature"] = signature
    out.setdefault("signature", signature)
    return out


def signed(
    body: Mapping[str, Any], key: str = PUBLIC + SECRET, recipe: str = "hmac-sha512"
) -> dict[str, Any]:
    return with_signature(body, signing.sign(signing.unsigned(body), key, recipe))


def wire(body: Mapping[str, Any]) -> bytes:
    """What Node sends: ``JSON.stringify(body)``."""
    return js_stringify(dict(body)).encode("utf-8")


class Receiver:
    """A tiny HTTP server on 127.0.0.1 that records every POST (rampwatch's stand-in)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.posts.append({"headers": dict(self.headers), "raw": raw, "at": time.monotonic()})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/fuspay"

    def raws(self) -> list[bytes]:
        with self.lock:
            return [p["raw"] for p in self.posts]

    def events(self, order_id: str | None = None) -> list[str]:
        bodies = [json.loads(raw) for raw in self.raws()]
        return [b["event_name"] for b in bodies if order_id is None or b["partner_order_id"] == order_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
