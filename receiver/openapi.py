"""``/api/openapi.json``: the OpenAPI 3 spec of every endpoint, from the schemas that
validate the requests (``receiver.schemas``), built once per app by ``build_spec``.

Operations are declared here as data, one entry per route; each one's security
comes from the token its view requires (``receiver.auth.requires``), read off the
app's views, so a view's token and its documentation cannot differ.
``tests/receiver/test_openapi.py`` validates the spec and checks that every route
under ``/api`` and ``/webhooks`` is in it.
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

from orders.providers import PROVIDERS
from receiver import schemas as s

TITLE = "rampwatch"
VERSION = "1"

# Error codes by status, for each operation's error answers.
ERRORS = {
    400: "invalid_payload or invalid_parameter: the body, a field, a query parameter or a header (named in fields)",
    401: "unauthorized: no bearer token or not a valid one (invalid_signature for a webhook)",
    403: "forbidden: the operator token is needed, or the token is not configured",
    404: "provider_disabled, order_not_found or anomaly_not_found",
    408: "request_timeout: the client stopped sending its body",
    409: "idempotency_conflict, order_exists, creation_in_progress (Retry-After) or already_resolved",
    413: "request_entity_too_large: body over 64 KiB",
    415: "unsupported_media_type: not application/json",
    429: "too_many_requests: refused webhook requests over the budget (Retry-After)",
    502: "provider_rejected, provider_response_invalid or poll_failed",
    503: "queue_unavailable, database_unavailable or provider_unavailable (Retry-After)",
}

PROVIDER = {
    "in": "path",
    "name": "provider",
    "required": True,
    "schema": {"type": "string", "enum": sorted(PROVIDERS)},
}
ORDER_ID = {
    "in": "path",
    "name": "external_order_id",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
}
ANOMALY_ID = {"in": "path", "name": "anomaly_id", "required": True, "schema": {"type": "integer"}}


def _json(schema: Any, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _operation(
    summary: str,
    ok: dict[int, dict[str, Any]],
    errors: tuple[int, ...],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: Any = None,
    tag: str,
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(code): answer for code, answer in ok.items()}
    for code in errors:
        responses[str(code)] = {"$ref": f"#/components/responses/E{code}"}
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


API_ERRORS = (401, 403, 503)
REPLAYED = {
    "Idempotent-Replayed": {
        "description": "true when this answers a repeat of an earlier request",
        "schema": {"type": "string", "enum": ["true", "false"]},
    }
}

# (path, method) -> operation. Paths in OpenAPI's form ({name}).
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/api/orders/{provider}", "post"): _operation(
        "Create an order at the provider (idempotent)",
        {
            201: _json(s.OrderViewSchema, "created: the order", REPLAYED),
            200: _json(
                s.OrderViewSchema, "a repeat: the order as it stands, the provider not called", REPLAYED
            ),
        },
        (400, *API_ERRORS, 404, 409, 413, 415, 502),
        parameters=[PROVIDER, {"in": "header", "schema": s.CreateHeaders}],
        body=s.CreateOrderBody,
        tag="orders",
    ),
    ("/api/orders", "get"): _operation(
        "List orders, newest first",
        {200: _json(s.OrderListSchema, "a page of orders")},
        (400, *API_ERRORS),
        parameters=[{"in": "query", "schema": s.OrderListQuery}],
        tag="orders",
    ),
    ("/api/orders/{provider}/{external_order_id}", "get"): _operation(
        "An order with its anomalies and event timeline",
        {200: _json(s.OrderViewSchema, "the order")},
        (400, *API_ERRORS, 404),
        parameters=[PROVIDER, ORDER_ID, {"in": "query", "schema": s.ShowOrderQuery}],
        tag="orders",
    ),
    ("/api/orders/{provider}/{external_order_id}/reconcile", "post"): _operation(
        "Poll the order at its provider now (operator)",
        {
            200: _json(s.ReconcileSchema, "wait=1: the poll's outcome"),
            202: _json(s.ReconcileSchema, "queued; or, with wait=1, pending, deferred or retrying"),
        },
        (400, *API_ERRORS, 404, 502),
        parameters=[PROVIDER, ORDER_ID, {"in": "query", "schema": s.ReconcileQuery}],
        tag="operator",
    ),
    ("/api/anomalies", "get"): _operation(
        "List anomalies, newest first (operator)",
        {200: _json(s.AnomalyListSchema, "a page of anomalies")},
        (400, *API_ERRORS),
        parameters=[{"in": "query", "schema": s.AnomalyListQuery}],
        tag="operator",
    ),
    ("/api/anomalies/{anomaly_id}/resolve", "post"): _operation(
        "Resolve an anomaly with a comment (operator)",
        {200: _json(s.AnomalyItemSchema, "the anomaly, resolved")},
        (400, *API_ERRORS, 404, 409, 413, 415),
        parameters=[ANOMALY_ID],
        body=s.ResolveBody,
        tag="operator",
    ),
    ("/api/events", "get"): _operation(
        "Partner notifications in commit order, after a cursor",
        {200: _json(s.EventsPageSchema, "a page of events")},
        (400, *API_ERRORS),
        parameters=[{"in": "query", "schema": s.EventsQuery}],
        tag="events",
    ),
    ("/api/openapi.json", "get"): {
        "summary": "This document (no token needed)",
        "tags": ["meta"],
        "security": [],
        "responses": {"200": {"description": "the OpenAPI document", "content": {"application/json": {}}}},
    },
    ("/webhooks/{provider}", "post"): {
        **_operation(
            "A provider's callback (signed by the provider; see docs/providers.md)",
            {200: _json(s.AcceptedSchema, "queued for apply")},
            (400, 401, 403, 404, 408, 413, 415, 429, 503),
            parameters=[PROVIDER],
            body={"type": "object", "description": "the provider's own callback body"},
            tag="webhooks",
        ),
        "security": [],
    },
    ("/healthz", "get"): {
        "summary": "The process answers",
        "tags": ["health"],
        "security": [],
        "responses": {"200": _json(s.AcceptedSchema, "up")},
    },
    ("/readyz", "get"): {
        "summary": "Redis and the database answer, at this release's schema",
        "tags": ["health"],
        "security": [],
        "responses": {
            "200": _json(s.ReadySchema, "ready"),
            "503": _json(s.ReadySchema, "not ready: checks name what is wrong (Retry-After)"),
        },
    },
}

SECURITY = {
    "partner": [{"partner": []}, {"operator": []}],
    "ops": [{"operator": []}],
}


def openapi_path(rule: str) -> str:
    """A Flask rule in OpenAPI's form: ``/a/<int:b>`` -> ``/a/{b}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def build_spec(app: Flask) -> dict[str, Any]:
    """The spec as a dict; each API operation secured by the token its view requires."""
    spec = APISpec(
        title=TITLE,
        version=VERSION,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={
            "description": (
                "Webhook receiver and order reconciler for crypto off-ramp providers. /api takes a bearer "
                "token: the partner's (RAMPWATCH_API_TOKEN) or the operator's (RAMPWATCH_OPS_TOKEN), which "
                "may do everything the partner's may. Lists page with an opaque cursor."
            )
        },
    )
    spec.components.security_scheme(
        "partner", {"type": "http", "scheme": "bearer", "description": "RAMPWATCH_API_TOKEN"}
    )
    spec.components.security_scheme(
        "operator", {"type": "http", "scheme": "bearer", "description": "RAMPWATCH_OPS_TOKEN"}
    )
    spec.components.schema("Error", schema=s.ErrorSchema)
    for code, description in ERRORS.items():
        spec.components.response(f"E{code}", _json("Error", description))
    roles = _roles(app)
    by_path: dict[str, dict[str, Any]] = {}
    for (path, method), operation in OPERATIONS.items():
        op = dict(operation)
        if path in roles.get(method, {}):
            op["security"] = SECURITY[roles[method][path]]
        by_path.setdefault(path, {})[method] = op
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _roles(app: Flask) -> dict[str, dict[str, str]]:
    """method -> OpenAPI path -> the role its view requires."""
    roles: dict[str, dict[str, str]] = {}
    for rule in app.url_map.iter_rules():
        role = getattr(app.view_functions[rule.endpoint], "required_role", None)
        if role is None:
            continue
        for method in rule.methods or ():
            roles.setdefault(method.lower(), {})[openapi_path(rule.rule)] = role
    return roles
