"""Delivery of the partner's notifications from the outbox (``notifications`` table).

The store writes a notification in the transaction of the change it tells of
(``orders.store``); this module sends it. One run delivers the pending notifications
of a set of orders (a drained batch's, or one order's), each order's oldest first (id =
version order), and stops an order at its first that fails: a later one never
overtakes it. A run goes in rounds: one transaction records what the last round
delivered and claims the next notification of every order still going
(``Store.claim_notifications``), then the round's notifications are sent,
``NOTIFY_CONCURRENCY`` at once over one keep-alive session. A round waits for its
slowest request (at most ``NOTIFY_TIMEOUT``); a batch of changes, most orders with one
new notification, costs two transactions in all instead of two for each notification.
Each is POSTed to ``NOTIFY_URL`` as
stored, byte for byte, signed the Standard Webhooks way: ``webhook-id``
(``msg_<notification id>``, the same on every attempt: the partner's dedup
key), ``webhook-timestamp`` (this attempt, in seconds) and ``webhook-signature``
(one ``v1,<base64>`` per secret, the current one first: during a rotation both
sign).

Error policy: any 2xx is delivered. Anything else (timeout, connection error,
another status, a redirect, which is never followed) is a failed attempt, kept
on the notification as a short reason (a status or an error class: never the
answer's body, the URL or a secret), and tried again after ``NOTIFY_BACKOFF``
(the last delay repeats) plus up to 20% jitter; after ``NOTIFY_MAX_ATTEMPTS``
attempts it is dead-lettered (logged once, served by the events feed still) and
the order's later notifications go out. Nothing here raises for the partner's
trouble; database or Redis trouble propagates to the job's error policy. Each
attempt is counted by outcome (``delivered``, ``failed``, ``dead``: ``config.metrics``).
"""

from __future__ import annotations

import contextvars
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import requests
from standardwebhooks.webhooks import Webhook

from config import Settings
from config.metrics import Metrics
from orders.events import utcnow
from orders.models import Notification
from orders.store import Store

log = logging.getLogger("rampwatch.notify")

JITTER = 0.2  # up to this fraction of a delay is added at random
BUDGET = 60.0  # seconds: a run starts no attempt past this (the job's timeout is 120 s)
USER_AGENT = "rampwatch-notify/1"


def lease(timeout: float) -> float:
    """How long a claimed attempt keeps its notification from other runs: longer than any
    attempt can last (connect and read each bounded by ``timeout``)."""
    return 2 * timeout + 30


def message_id(notification_id: int) -> str:
    return f"msg_{notification_id}"


def signature_headers(msg_id: str, body: str, secrets: Sequence[str], at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: every secret signs, current first."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets),
    }


def retry_delay(backoff: Sequence[int], attempts: int, jitter: float) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (the last delay
    repeats), stretched by ``jitter`` (0 to ``JITTER``)."""
    base = backoff[min(attempts, len(backoff)) - 1] if backoff else 60
    return base * (1 + jitter)


@dataclass
class Report:
    """What one run did for one order."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0
    retry_in: float | None = None  # seconds until the failed one is tried again
    retry_job: str | None = None  # the job id that retry should be scheduled under
    budget_spent: bool = False  # stopped with notifications still due

    def as_dict(self) -> dict[str, object]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "dead": self.dead,
            "retry_in": None if self.retry_in is None else round(self.retry_in, 3),
            "budget_spent": self.budget_spent,
        }


@dataclass
class Deliverer:
    """Sends orders' due notifications. Collaborators come through the constructor."""

    store: Store
    url: str
    secrets: tuple[str, ...]
    timeout: float
    max_attempts: int
    backoff: tuple[int, ...]
    session: requests.Session
    clock: Callable[[], datetime] = utcnow
    jitter: Callable[[], float] = field(default=lambda: random.uniform(0, JITTER))
    budget: float = BUDGET
    metrics: Metrics = field(default_factory=Metrics)  # counts held in memory unless given one

    @classmethod
    def from_settings(
        cls, settings: Settings, store: Store, session: requests.Session, metrics: Metrics | None = None
    ) -> Deliverer:
        assert settings.notify_url
        return cls(
            store=store,
            url=settings.notify_url,
            secrets=tuple(named.value for named in settings.notify_secrets),
            timeout=settings.notify_timeout,
            max_attempts=settings.notify_max_attempts,
            backoff=settings.notify_backoff,
            session=session,
            clock=lambda: store.clock(),  # one clock for the claim, the retry time and the headers
            metrics=metrics or Metrics(),
        )

    def run(self, order_id: int) -> Report:
        """Send the order's due notifications in order until one fails, none is due, or
        the run's budget is spent."""
        return self.run_many([order_id], 1)[order_id]

    def run_many(self, order_ids: Sequence[int], threads: int) -> dict[int, Report]:
        """Send the due notifications of ``order_ids`` in rounds (module docstring),
        ``threads`` requests at once: each order's in order until one fails or none is due;
        no round starts past the run's budget, and the orders still going are reported
        ``budget_spent``. A report for each order, by id."""
        reports = {order_id: Report() for order_id in dict.fromkeys(order_ids)}
        started = time.monotonic()
        going = list(reports)
        delivered: list[int] = []  # sent, to be recorded with the next claim
        with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="notify") as pool:
            while going:
                if time.monotonic() - started > self.budget:
                    for order_id in going:
                        reports[order_id].budget_spent = True
                    break
                claimed = self.store.claim_notifications(going, lease(self.timeout), delivered=delivered)
                delivered = []
                # Each request in a copy of the caller's context: its log lines carry the job's ids.
                sent = [
                    pool.submit(contextvars.copy_context().run, self._attempt, n) for n in claimed.values()
                ]
                going = []
                for (order_id, note), future in zip(claimed.items(), sent, strict=True):
                    error = future.result()
                    if error is None:
                        delivered.append(note.id)
                    if self._settle(note, error, reports[order_id]):
                        going.append(order_id)
        if delivered:
            self.store.notifications_delivered(delivered)
        return reports

    def _settle(self, note: Notification, error: str | None, report: Report) -> bool:
        """Count one attempt's outcome in the order's report and record a failure; whether
        the order goes on to its next notification (delivered, or dead-lettered)."""
        if error is None:
            report.delivered += 1
            self.metrics.inc("rampwatch_notifications", outcome="delivered")
            return True
        if note.attempts >= self.max_attempts:
            self.store.notification_failed(note.id, error, None)
            self.metrics.inc("rampwatch_notifications", outcome="dead")
            report.dead += 1
            log.warning(
                "notification %s (%s v%d of order %d) dead-lettered after %d attempts: %s",
                message_id(note.id),
                note.kind,
                note.version,
                note.order_id,
                note.attempts,
                error,
            )
            return True  # a dead one no longer holds the order's later ones back
        delay = retry_delay(self.backoff, note.attempts, self.jitter())
        self.store.notification_failed(note.id, error, self.clock() + timedelta(seconds=delay))
        self.metrics.inc("rampwatch_notifications", outcome="failed")
        report.failed += 1
        report.retry_in = delay
        report.retry_job = f"notify-retry-{note.order_id}-{note.id}-{note.attempts}"
        log.info(
            "notification %s (%s v%d) attempt %d failed: %s; next in %.0fs",
            message_id(note.id),
            note.kind,
            note.version,
            note.attempts,
            error,
            delay,
        )
        return False

    def _attempt(self, note: Notification) -> str | None:
        """POST one notification; None when the partner took it, else a short reason."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **signature_headers(message_id(note.id), note.body, self.secrets, self.clock()),
        }
        try:
            with self.session.post(
                self.url,
                data=note.body.encode("utf-8"),
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,  # the answer's body is never read: its status is the answer
            ) as answer:
                status = answer.status_code
        except requests.Timeout:
            return f"timed out after {self.timeout:g}s"
        except requests.RequestException as exc:
            return f"request failed: {type(exc).__name__}"
        if 200 <= status < 300:
            return None
        if 300 <= status < 400:
            return f"HTTP {status} (redirects are not followed)"
        return f"HTTP {status}"
