"""Provider callbacks: verify the raw body, normalise, enqueue, acknowledge.

No database work happens here. The answer is 200 only once Redis has accepted
the job; when Redis is down the answer is 503 so that the provider retries.
A callback that fails verification is never queued for apply; if it names an
order, a rate-limited healing poll of that order is queued instead (so a key
misconfiguration heals through the provider's API instead of losing updates).

The body is read within bounds (``receiver.body``: 64 KiB however framed, 408
for a client that stops sending) and parsed with bounds by the adapter.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from redis.exceptions import RedisError

from orders.errors import ProviderDisabled, SignatureInvalid
from orders.events import utcnow
from receiver.body import read_body
from receiver.errors import UnsupportedMediaType

log = logging.getLogger("rampwatch.receiver")

bp = Blueprint("webhooks", __name__)


@bp.post("/webhooks/<provider>")
def callback(provider: str) -> Any:
    deps = current_app.extensions["rampwatch"]
    adapter = deps.adapters.get(provider)
    if adapter is None:
        raise ProviderDisabled(f"provider {provider} is not configured")
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(f"content type must be application/json, got {request.mimetype or 'none'}")
    body = read_body(request)
    try:
        event = adapter.parse_callback(body, dict(request.headers), utcnow())
    except SignatureInvalid:
        _heal(deps, provider, adapter.order_hint(body))
        log.warning("%s callback refused: signature does not verify", provider)
        raise
    job_id = deps.queues.enqueue_event(event)
    log.info("%s callback accepted: status=%s job=%s", provider, event.provider_status, job_id)
    return jsonify({"status": "accepted"}), 200


def _heal(deps: Any, provider: str, order_id: str | None) -> None:
    if not order_id:
        return
    try:
        deps.queues.enqueue_heal(provider, order_id)
    except RedisError:
        log.warning("could not queue a healing poll: redis unavailable")
