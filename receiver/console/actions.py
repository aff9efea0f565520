"""The console's repairs (POST, CSRF-checked by the blueprint): each does what its API or
CLI twin does, then redirects with a notice.

* reconcile: ``receiver.api.reconcile.request_poll`` then ``wait_for_poll``, the API's
  ``?wait=1`` (bounded by the app's ``reconcile_wait``): the order page then shows the
  status the poll found;
* resolve an anomaly: ``Store.resolve_anomaly`` with the operator's comment;
* requeue one dead letter, or all of them: ``workers.deadletters`` (``rampwatch dlq``);
* redeliver a notification: ``Store.redeliver_notification`` and the order's delivery
  queued, as ``rampwatch notifications redeliver`` does.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, redirect, request, url_for

from orders.errors import AnomalyNotFound, Conflict
from receiver.api.common import writer
from receiver.api.reconcile import request_poll, wait_for_poll
from receiver.console.session import notice
from receiver.errors import PollFailed
from receiver.schemas import MAX_COMMENT
from workers.deadletters import sources

bp = Blueprint("actions", __name__)
log = logging.getLogger("rampwatch.console")

# Where an action may send the operator back to (a form's "back" field).
BACK = {"stuck": "console.pages.stuck", "failed": "console.pages.failed"}


def _order_page(provider: str, external_order_id: str) -> str:
    return url_for("console.pages.order", provider=provider, external_order_id=external_order_id)


def _back(default: str) -> str:
    """The page a form names in its ``back`` field (a fixed list, never a URL), else ``default``."""
    back = request.form.get("back", "")
    provider, external_order_id = request.form.get("provider", ""), request.form.get("order", "")
    if back == "order" and provider and external_order_id:
        return _order_page(provider, external_order_id)
    endpoint = BACK.get(back)
    return url_for(endpoint) if endpoint else default


@bp.post("/orders/<provider>/<external_order_id>/reconcile")
def reconcile(provider: str, external_order_id: str) -> Any:
    target = _back(_order_page(provider, external_order_id))
    request_poll(provider, external_order_id, reason="console")
    try:
        outcome = wait_for_poll(provider, external_order_id)
    except PollFailed as exc:
        return notice(redirect(target, code=303), str(exc), error=True)
    if outcome.status == "polled" and outcome.order:
        o = outcome.order
        text = (
            f"Reconciled {provider} {external_order_id}: {o['status']} "
            f"(provider {o['provider_status'] or '-'}, {o['decision']}, version {o['version']})"
        )
    else:
        text = f"Reconcile of {provider} {external_order_id}: {outcome.status}: {outcome.detail}"
    log.info("console reconcile of a %s order: %s", provider, outcome.status)
    return notice(redirect(target, code=303), text)


@bp.post("/anomalies/<int:anomaly_id>/resolve")
def resolve(anomaly_id: int) -> Any:
    comment = request.form.get("comment", "").strip()
    target = _back(url_for("console.pages.orders"))
    if not comment or len(comment) > MAX_COMMENT:
        text = f"Anomaly #{anomaly_id} not resolved: a comment (1 to {MAX_COMMENT} characters) says what was done."
        return notice(redirect(target, code=303), text, error=True)
    try:
        anomaly, provider, external_order_id = writer().resolve_anomaly(anomaly_id, comment)
    except (AnomalyNotFound, Conflict) as exc:
        return notice(redirect(target, code=303), str(exc), error=True)
    text = f"Anomaly #{anomaly_id} ({anomaly.kind}) resolved"
    return notice(redirect(_order_page(provider, external_order_id), code=303), text)


@bp.post("/failed/requeue")
def requeue() -> Any:
    """One dead letter (``source`` and ``id``), or every one of a source (``source`` only),
    or every one of every source (neither)."""
    wanted_source = request.form.get("source") or None
    letter_id = request.form.get("id") or None
    redis = current_app.extensions["rampwatch"].redis
    requeued, missing = 0, 0
    for source in sources(redis):
        if wanted_source is not None and source.name != wanted_source:
            continue
        ids = [letter_id] if letter_id else [letter.id for letter in source.list()]
        for ident in ids:
            if source.requeue(ident):
                requeued += 1
            else:
                missing += 1
    target = url_for("console.pages.failed")
    if letter_id and not requeued:
        return notice(
            redirect(target, code=303), f"No dead letter {letter_id} in {wanted_source}", error=True
        )
    log.info("console requeued %d dead letter(s)", requeued)
    text = f"Requeued {requeued} dead letter(s)" + (f"; {missing} were gone already" if missing else "")
    return notice(redirect(target, code=303), text)


@bp.post("/notifications/<int:notification_id>/redeliver")
def redeliver(notification_id: int) -> Any:
    services = current_app.extensions["rampwatch"]
    target = _back(url_for("console.pages.failed"))
    try:
        note = services.store.redeliver_notification(notification_id)
    except Conflict as exc:
        return notice(redirect(target, code=303), str(exc), error=True)
    if note is None:
        return notice(redirect(target, code=303), f"No notification {notification_id}", error=True)
    if not services.settings.notify_url:
        text = f"Notification {notification_id} is due again; NOTIFY_URL is not set, so nothing sends it"
        return notice(redirect(target, code=303), text)
    queued = services.queues.enqueue_delivery(note.order_id)
    text = (
        f"Notification {notification_id} ({note.kind} v{note.version}) is due again; "
        f"delivery of its order {'queued' if queued else 'already queued'}"
    )
    return notice(redirect(target, code=303), text)
