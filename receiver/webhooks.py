"""Provider callbacks: verify the raw body, normalise, enqueue, acknowledge.

No database work happens here. The answer is 200 only once Redis has accepted
the job; when Redis is down the answer is 503 so that the provider retries.
A callback that fails verification is never queued for apply; if it names an
order, a rate-limited healing poll of that order is queued instead (so a key
misconfiguration heals through the provider's API instead of losing updates).

Before the body is read: the provider must be enabled (404), the client address
allowed (403, ``<PREFIX>ALLOWED_IPS``) and not over its budget of refused requests
(429, ``receiver.limits``). Every refusal after that counts against the budget.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from redis.exceptions import RedisError

from orders.errors import ProviderDisabled, SignatureInvalid
from orders.events import utcnow
from receiver.body import read_body
from receiver.errors import UnsupportedMediaType
from receiver.limits import require_allowed

log = logging.getLogger("rampwatch.receiver")

bp = Blueprint("webhooks", __name__)

# Refusals that do not count against a client's budget: the provider is off, the
# address is not allowed (refused before any work), or the client is already throttled.
UNCOUNTED = frozenset({403, 404, 429})


@bp.post("/webhooks/<provider>")
def callback(provider: str) -> Any:
    deps = current_app.extensions["rampwatch"]
    adapter = deps.adapters.get(provider)
    if adapter is None:
        raise ProviderDisabled(f"provider {provider} is not configured")
    require_allowed(
        provider, request.remote_addr, getattr(deps.settings.provider(provider), "allowed_ips", ())
    )
    current_app.extensions["rampwatch.limiter"].check(provider, request.remote_addr)
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


@bp.after_request
def count_refusal(response: Response) -> Response:
    """Count a refused callback against its client's budget (``receiver.limits``)."""
    provider = (request.view_args or {}).get("provider")
    if provider is None or not 400 <= response.status_code < 500 or response.status_code in UNCOUNTED:
        return response
    try:
        current_app.extensions["rampwatch.limiter"].count(provider, request.remote_addr)
    except RedisError:
        log.warning("could not count a refused %s callback: redis unavailable", provider)
    return response


def _heal(deps: Any, provider: str, order_id: str | None) -> None:
    if not order_id:
        return
    try:
        deps.queues.enqueue_heal(provider, order_id)
    except RedisError:
        log.warning("could not queue a healing poll: redis unavailable")
