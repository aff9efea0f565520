"""The demo partner of ``make run``: where rampwatch's notifications go, on 127.0.0.1.

A loopback HTTP server (``devkit.kit.server``) that does what the README's
Notifications section asks of a partner: it verifies each notification with the
Standard Webhooks library against its secret (``whsec_``, the stack's
``NOTIFY_SECRET``), answers 400 to one that does not verify, takes a retry of one
it already has (same ``webhook-id``) once, and checks per order that versions
arrive in order. Each verified notification is appended as one JSON line to its
log (``var/dev/notifications.jsonl``, started afresh each run), which
``tail -f`` follows. ``summary`` says what arrived, for the end of the demo.
It is tooling: no product module imports it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug.serving import BaseWSGIServer

from devkit.kit.loopback import is_loopback_ipv4
from devkit.kit.server import Reply, Request, serve, wsgi_app

PATH = "/notifications"
log = logging.getLogger("rampwatch.partner")


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class OrderTrail:
    """What one order's notifications said, in arrival order."""

    steps: list[tuple[int, str, str]] = field(default_factory=list)  # (version, type, status)
    out_of_order: int = 0

    @property
    def last_version(self) -> int:
        return self.steps[-1][0] if self.steps else 0


class DemoPartner:
    """Receives, verifies and logs notifications. Thread-safe."""

    def __init__(self, secret: str, log_path: Path, *, host: str = "127.0.0.1", port: int = 0):
        if not is_loopback_ipv4(host):
            raise ValueError("the demo partner binds only a loopback IPv4 address such as 127.0.0.1")
        self.secret = secret
        self.webhook = Webhook(secret)
        self.log_path = log_path
        self.host, self.port = host, port
        self.refused = 0  # requests that did not verify
        self._seen: set[str] = set()  # webhook ids taken
        self._orders: dict[str, OrderTrail] = {}
        self._lock = threading.Condition()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://{self.host}:{self._server.server_address[1]}{PATH}"

    def start(self) -> Self:
        """Listen and serve (OSError when the port cannot be had); the log starts empty."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("", encoding="utf-8")
        server = serve(wsgi_app(self._dispatch), self.host, self.port, name="partner", log=log)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="demo-partner", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _dispatch(self, request: Request) -> Reply:
        if request.path != PATH:
            return 404, {"error": "not found"}
        if request.method != "POST":
            return 405, {"error": "POST only"}
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            payload = self.webhook.verify(request.raw, headers)
        except (WebhookVerificationError, ValueError):  # ValueError: bad base64, UTF-8 or JSON
            with self._lock:
                self.refused += 1
            return 400, {"error": "signature does not verify"}
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
            return 400, {"error": "not a notification"}
        self._take(headers["webhook-id"], payload)
        return 200, {"received": True}

    def _take(self, webhook_id: str, payload: dict[str, Any]) -> None:
        data = payload["data"]
        order = f"{data.get('provider')} {data.get('external_order_id')}"
        version = int(data.get("version") or 0)
        with self._lock:
            if webhook_id in self._seen:
                return  # a retry of one we have (our answer was lost): taken once
            self._seen.add(webhook_id)
            trail = self._orders.setdefault(order, OrderTrail())
            in_order = version >= trail.last_version
            if not in_order:
                trail.out_of_order += 1
            trail.steps.append((version, str(payload.get("type")), str(data.get("status"))))
            line = {
                "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "webhook_id": webhook_id,
                "in_order": in_order,
                "notification": payload,
            }
            with self.log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line, separators=(",", ":")) + "\n")
            self._lock.notify_all()

    def statuses(self, order: str) -> list[str]:
        """The statuses ``order`` (``"<provider> <external id>"``) was told of, in arrival order."""
        with self._lock:
            return [status for _, _, status in self._orders.get(order, OrderTrail()).steps]

    def wait_for(self, orders: Iterable[str], status: str, timeout: float, stop: threading.Event) -> bool:
        """Whether every one of ``orders`` was told of ``status`` within ``timeout``."""
        wanted = list(orders)
        deadline = time.monotonic() + timeout
        with self._lock:
            while not all(status in self.statuses(o) for o in wanted):
                left = deadline - time.monotonic()
                if left <= 0 or stop.is_set():
                    return False
                self._lock.wait(min(left, 0.5))
        return True

    def counts(self) -> tuple[int, int]:
        """How many notifications were taken (each once), and how many of them arrived
        after a later version of their order."""
        with self._lock:
            trails = list(self._orders.values())
            return sum(len(t.steps) for t in trails), sum(t.out_of_order for t in trails)

    def summary(self) -> tuple[list[str], bool]:
        """One line per order and a last line with the count; whether every order's
        notifications arrived in version order."""
        count, _ = self.counts()
        with self._lock:
            lines = [
                f"{order}: " + ", ".join(f"{status} v{version}" for version, _, status in trail.steps)
                for order, trail in self._orders.items()
            ]
            late = [order for order, trail in self._orders.items() if trail.out_of_order]
            refused = f", {self.refused} refused (bad signature)" if self.refused else ""
        if late:
            lines.append(f"{count} notifications verified{refused}; OUT OF ORDER: {', '.join(late)}")
        else:
            lines.append(f"{count} notifications verified{refused}, every order in version order")
        return lines, not late
