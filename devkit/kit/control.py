"""The control API under ``/sandbox/``: the Python API of a sandbox, over HTTP.

A dev runner or a shell in another process drives a sandbox through it. The kit
serves ``GET|POST /sandbox/switches``, ``POST /sandbox/flush``, ``GET
/sandbox/deliveries``, ``GET /sandbox/orders`` (``truth()``) and ``GET
/sandbox/orders/<id>``; a sandbox adds its own routes as Werkzeug ``Rule``s in
``control_rules``, each endpoint naming one of its methods, called with the
posted JSON object (``{}`` without a body) and the path's values. This module
owns those routes, the body check (400 when it is not a JSON object) and 404 /
405 for what matches no route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule, Submount

from devkit.kit.server import Reply, Request, route, rules_map
from devkit.kit.wire import parse_object

if TYPE_CHECKING:
    from devkit.kit.sandbox import SandboxKit

PREFIX = "/sandbox"


def _switches(kit: SandboxKit, body: dict[str, Any]) -> Reply:
    return 200, kit.switches


def _set_switches(kit: SandboxKit, body: dict[str, Any]) -> Reply:
    try:
        return 200, kit.set_switches(**body)
    except (TypeError, ValueError) as exc:
        return 400, {"error": str(exc)}


def _flush(kit: SandboxKit, body: dict[str, Any]) -> Reply:
    return 200, {"flushed": kit.flush()}


def _deliveries(kit: SandboxKit, body: dict[str, Any]) -> Reply:
    return 200, {
        "deliveries": [list(d) for d in kit.deliveries],
        "dropped": [list(d) for d in kit.dropped],
        "held": kit.held,
        "pending": kit.pending,
    }


def _orders(kit: SandboxKit, body: dict[str, Any]) -> Reply:
    return 200, {"orders": kit.truth()}


def _order(kit: SandboxKit, body: dict[str, Any], order_id: str) -> Reply:
    try:
        return 200, kit.order(order_id)
    except KeyError:
        return 404, {"error": "unknown order"}


KIT_RULES = (
    Rule("/switches", methods=["GET"], endpoint=_switches),
    Rule("/switches", methods=["POST"], endpoint=_set_switches),
    Rule("/flush", methods=["POST"], endpoint=_flush),
    Rule("/deliveries", methods=["GET"], endpoint=_deliveries),
    Rule("/orders", methods=["GET"], endpoint=_orders),
    Rule("/orders/<order_id>", methods=["GET"], endpoint=_order),
)


def is_control(request: Request) -> bool:
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


def control_map(rules: Iterable[Rule]) -> Map:
    """The kit's routes and ``rules`` (a sandbox's), under ``/sandbox``."""
    return rules_map([Submount(PREFIX, [*KIT_RULES, *rules])])


def answer(kit: SandboxKit, urls: Map, request: Request) -> Reply:
    """The control API's reply to ``request`` (one under ``/sandbox``)."""
    body: dict[str, Any] = {}
    if request.method in ("POST", "PATCH") and request.raw.strip():
        parsed = parse_object(request.raw)
        if parsed is None:
            return 400, {"error": "body must be a JSON object"}
        body = parsed
    try:
        endpoint, values = route(urls, request)
    except HTTPException as exc:
        return exc.code or 404, {"error": "Method not allowed" if exc.code == 405 else "Not found"}
    handler: Callable[..., Reply] = (
        getattr(kit, endpoint) if isinstance(endpoint, str) else lambda *a, **kw: endpoint(kit, *a, **kw)
    )
    return handler(body, **values)
