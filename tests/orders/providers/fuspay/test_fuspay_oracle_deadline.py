"""The oracle check has one deadline for all keys: a slow oracle means 503, not a hung worker."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fuspay_testkit import settings_for

from config import Named
from orders.errors import ProviderUnavailable
from orders.providers.fuspay.adapter import FuspayAdapter


class SlowOracle(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls += 1
        time.sleep(0.3)
        body = json.dumps({"success": True, "data": {"signature": "0" * 128}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_slow_oracle_is_cut_off_by_one_overall_deadline() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowOracle)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        publics = tuple(Named(f"FUSPAY_PUBLIC_KEY{s}", f"pk_{s}") for s in ("", "_PREVIOUS"))
        secrets = tuple(Named(f"FUSPAY_SECRET_KEY{s}", f"sk_{s}") for s in ("", "_PREVIOUS"))
        settings = settings_for(
            f"http://127.0.0.1:{server.server_port}",
            recipe="oracle",
            public_keys=publics,
            secret_keys=secrets,
            timeout=0.5,
        )
        body = {"event_name": "event.sell.init", "partner_order_id": "o-1", "signature": "f" * 128}
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable, match="too slow"):
            FuspayAdapter(settings).parse_callback(json.dumps(body).encode(), {}, datetime.now(UTC))
        assert time.monotonic() - started < 1.5  # not 4 keys x 0.3 s x retries
        assert 1 <= SlowOracle.calls < 4
    finally:
        server.shutdown()
