"""Provider callbacks: verify the raw body, normalise, enqueue, acknowledge.

No database work happens here. The answer is 200 only once Redis has accepted
the event on the callback stream (``workers.stream``: one ``XADD``); when Redis is down
the answer is 503 so that the provider retries.
A callback that fails verification is never queued for apply; if it names an
order, a rate-limited healing poll of that order is queued instead (so a key
misconfiguration heals through the provider's API instead of losing updates).

Before the body is read: the provider must be enabled (404), the client address
allowed (403, ``<PREFIX>ALLOWED_IPS``) and not over its budget of refused requests
(429, ``receiver.limits``). Every refusal after that counts against the budget.

Every answer is counted (``rampwatch_callbacks_total{provider, outcome}``): ``accepted``,
or the error code of the refusal (``invalid_signature``, ``invalid_payload``,
``address_not_allowed``, ``too_many_requests``, ``queue_unavailable``, ...); a slug that
names no provider of the registry is counted as ``other``, so a client cannot mint
labels. A signature that does not verify is also counted by itself
(``rampwatch_verification_failures_total``). Log lines carry the provider and, once
verified, the order.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from redis.exceptions import RedisError

from config.logs import bind
from orders.errors import ProviderDisabled, SignatureInvalid
from orders.events import utcnow
from orders.providers import PROVIDERS
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
    bind(provider=provider)
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
        deps.metrics.inc("rampwatch_verification_failures", provider=provider)
        _heal(deps, provider, adapter.order_hint(body))
        log.warning("%s callback refused: signature does not verify", provider)
        raise
    bind(order_id=event.external_order_id or event.provider_order_id)
    entry = deps.stream.append(event)
    g.callback_outcome = "accepted"
    # DEBUG: at a provider's rate an INFO line per callback costs the receiver ~10% (and a lock
    # its threads contend for); every callback is counted (/metrics) and its apply logged.
    log.debug("%s callback accepted: status=%s entry=%s", provider, event.provider_status, entry)
    return jsonify({"status": "accepted"}), 200


@bp.after_request
def count_callback(response: Response) -> Response:
    """Count every answer to a callback, by provider and outcome (see the module docstring)."""
    provider = (request.view_args or {}).get("provider")
    if provider is None:
        return response
    outcome = g.get("callback_outcome")
    if outcome is None:
        body = response.get_json(silent=True) if response.is_json else None
        code = body.get("code") if isinstance(body, dict) else None
        outcome = code if isinstance(code, str) else f"http_{response.status_code}"
    current_app.extensions["rampwatch"].metrics.inc(
        "rampwatch_callbacks", provider=provider if provider in PROVIDERS else "other", outcome=outcome
    )
    return response


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
