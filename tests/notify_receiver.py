"""A partner's notification endpoint for tests: Werkzeug on a free 127.0.0.1 port.

Every request is verified with the Standard Webhooks library (``Webhook(secret).verify``,
any of the receiver's secrets) and recorded; a request that does not verify is
answered 400. What a verified one is answered is the test's choice (``answer``: a
status, a delay before answering, extra headers), so a receiver can fail, recover,
be slow or redirect. Importable from any test as ``notify_receiver``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from recorders import WsgiLoopback
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug.wrappers import Request, Response


@dataclass
class Arrival:
    """One request as the partner saw it."""

    headers: dict[str, str]
    body: bytes
    verified: bool
    payload: dict[str, Any] | None
    at: float = field(default_factory=time.monotonic)
    status: int | None = None  # what it was answered (None: not yet)
    slow: bool = False  # answered only after a delay (the sender may have given up)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def version(self) -> int:
        assert self.payload is not None
        return int(self.payload["data"]["version"])

    @property
    def order(self) -> str:
        assert self.payload is not None
        return str(self.payload["data"]["external_order_id"])


# (status, seconds to wait before answering, extra headers)
Answer = tuple[int, float, dict[str, str]]
OK: Answer = (204, 0.0, {})


class PartnerReceiver:
    """Verifies and records notifications; ``answer(arrival)`` decides each verified answer."""

    def __init__(self, secrets: Sequence[str], answer: Callable[[Arrival], Answer] | None = None):
        self.secrets = list(secrets)
        self.answer = answer or (lambda _arrival: OK)
        self.arrivals: list[Arrival] = []
        self.pause = 0.0  # seconds every request takes before its answer (a distant partner)
        self.in_flight = 0
        self.most_in_flight = 0  # the most requests handled at once
        self._lock = threading.Lock()
        self.server = WsgiLoopback(Request.application(self._handle))

    @property
    def url(self) -> str:
        return f"{self.server.base}/partner/notifications"

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> PartnerReceiver:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _handle(self, request: Request) -> Response:
        body = request.get_data()
        headers = {name.lower(): value for name, value in request.headers.items()}
        payload = self._verify(body, headers)
        arrival = Arrival(headers=headers, body=body, verified=payload is not None, payload=payload)
        with self._lock:
            self.arrivals.append(arrival)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.pause:
                time.sleep(self.pause)
        finally:
            with self._lock:
                self.in_flight -= 1
        status, delay, extra = self.answer(arrival) if arrival.verified else (400, 0.0, {})
        if delay:
            arrival.slow = True
            time.sleep(delay)
        arrival.status = status
        return Response(json.dumps({"ok": 200 <= status < 300}), status=status, headers=extra)

    def _verify(self, body: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
        for secret in self.secrets:
            try:
                return Webhook(secret).verify(body, headers)  # type: ignore[no-any-return]
            except WebhookVerificationError:
                continue
        return None

    @property
    def delivered(self) -> list[Arrival]:
        """Verified notifications answered 2xx at once: what the sender counts as delivered."""
        with self._lock:
            return [a for a in self.arrivals if a.verified and not a.slow and (a.status or 0) // 100 == 2]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Arrival]:
        """The first ``count`` delivered, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(self.delivered) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.delivered
