"""A real HTTP fake of the Changelly Fiat API (sell side), for tests and local development.

It serves, on 127.0.0.1 only, what the client uses and what Changelly's sandbox
offers: ``POST /v1/sell/orders``, ``GET /v1/orders`` (filters ``orderId``,
``externalOrderId``, ``externalUserId``, ``status``, ``startDate``/``endDate`` on
``createdAt``, ``offset``/``limit`` 1..100; a filter may also be written
``name[]``/``name[0]``, doc bug C-6), ``PATCH /v1/sandbox/order/{orderId}``
(``{"status": ...}``: change the status and send a callback) and
``/v1/sandbox/order/{orderId}/resend-callback`` (POST, and GET as its cURL
sample has it, doc bug C-5). Every ``/v1`` call must carry our ``X-Api-Key`` and
an ``X-Api-Signature`` over the full URL as sent (from the ``Host`` header and
the request-target) plus the body as sent, ``{}`` without one; anything else is
401 ``unauthorized``. Errors use Changelly's schema ``{errorType, errorMessage,
errorDetails}``. ``response_shape`` picks the ``GET /v1/orders`` answer: the
documented ``{orders, limit, offset, total}`` object or the sample's top-level
array (C-6).

Callbacks go to ``callback_url`` with the documented body fields and an
``X-Callback-Signature`` over ``{"orderId":"<id>"}`` only, made with the
sandbox's callback key (its public half: ``callback_public_key``, PKCS#1 PEM in
``callback_public_key_pem``). Orders are keyed by ``externalOrderId`` for the
switches, ``deliveries`` and ``truth()``; the Python API also accepts the
``orderId``. The kit's switches apply (``drop``, ``drop_rate`` + ``seed``,
``duplicate``, ``delay``, ``reorder`` + ``flush``; global or per order), plus
``rate_limit`` (global: answer the next N ``/v1`` calls with 429 and
``Retry-After: <retry_after>``), ``retry_after`` (seconds), ``detail_delay`` and
``detail_fail`` (``GET /v1/orders`` waits, or answers 503 ``unavailable``; per
order when the call names one order) and the kit's other order-detail faults
(``detail_throttle``, ``detail_redirect``, ``detail_garbage``). Nothing personal (IP, user agent,
addresses) is logged. A control API under ``/sandbox/`` mirrors the Python API.

Run it alone: ``python -m devkit.changelly --help`` (``devkit.changelly.cli``); its
orders are ``devkit.changelly.model``.
"""

from __future__ import annotations

import copy
import hmac
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule

from devkit.changelly.model import (
    SELL_OPTIONAL,
    STATUSES,
    apply_status,
    check_sell,
    js_number,
    new_order,
    parse_time,
)
from devkit.kit import (
    DETAIL_SWITCHES,
    Reply,
    Request,
    SandboxKit,
    check_nonempty,
    compact,
    new_rsa_key,
    parse_object,
    route,
    rules_map,
)
from orders.providers.changelly import signing
from orders.providers.changelly.client import MAX_LIMIT, ORDERS_PATH, SELL_ORDERS_PATH

SHAPES = ("object", "array")
SANDBOX_ORDER_PREFIX = "/v1/sandbox/order/"
MAX_RATE_LIMIT = 1000
LIST_FILTERS = ("orderId", "externalOrderId", "externalUserId", "status")
LIST_SCALARS = ("startDate", "endDate", "offset", "limit")
_FILTER_NAME = re.compile(r"^(?P<name>[A-Za-z]+)(?:\[\d*\])?$")

# Beyond the kit's common switches (drop, drop_rate, seed, duplicate, delay, reorder).
EXTRA_SWITCHES: dict[str, Any] = {"rate_limit": 0, "retry_after": 1.0, **DETAIL_SWITCHES}
API = rules_map(
    [
        Rule(SELL_ORDERS_PATH, methods=["POST"], endpoint="_api_create"),
        Rule(ORDERS_PATH, methods=["GET"], endpoint="_api_list"),
        Rule(f"{SANDBOX_ORDER_PREFIX}<order_id>", methods=["PATCH"], endpoint="_api_patch"),
        # POST as documented, GET as its cURL sample has it (doc bug C-5)
        Rule(
            f"{SANDBOX_ORDER_PREFIX}<order_id>/resend-callback",
            methods=["POST", "GET"],
            endpoint="_api_resend",
        ),
    ]
)


class ChangellySandbox(SandboxKit):
    """An in-memory Changelly Fiat API on 127.0.0.1. Thread-safe; see the module docstring."""

    name = "changelly"
    extra_switches = EXTRA_SWITCHES
    switch_limits = {"rate_limit": MAX_RATE_LIMIT}
    global_switches = ("rate_limit", "retry_after")
    known_steps = STATUSES
    step_noun = "statuses"

    def __init__(
        self,
        *,
        api_key: str,
        partner_public_key: RSAPublicKey,
        callback_private_key: RSAPrivateKey | None = None,
        callback_url: str | None = None,
        response_shape: str = "object",
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        check_nonempty(api_key=api_key)
        if not isinstance(partner_public_key, RSAPublicKey):
            raise TypeError("partner_public_key must be an RSA public key")
        if callback_private_key is not None and not isinstance(callback_private_key, RSAPrivateKey):
            raise TypeError("callback_private_key must be an RSA private key")
        if response_shape not in SHAPES:
            raise ValueError(f"response_shape must be one of {', '.join(SHAPES)}")
        super().__init__(callback_url=callback_url, host=host, port=port)
        self.api_key = api_key
        self.partner_public_key = partner_public_key
        self.response_shape = response_shape
        self._callback_private_key = callback_private_key or new_rsa_key()
        self._ids: dict[str, str] = {}  # orderId -> externalOrderId

    @property
    def callback_public_key(self) -> RSAPublicKey:
        return self._callback_private_key.public_key()

    @property
    def callback_public_key_pem(self) -> bytes:
        """PKCS#1 ``RSA PUBLIC KEY`` PEM, the form Changelly hands its callback key out in."""
        return signing.public_key_pem(self.callback_public_key)

    # -- orders (Python API)

    def create_order(
        self,
        external_order_id: str,
        *,
        amount_from: str | float = "0.01",
        currency_from: str = "BTC",
        currency_to: str = "EUR",
        external_user_id: str = "sandbox-user",
        provider_code: str = "moonpay",
        country: str = "DE",
        created_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Create a sell order at ``created`` directly (no request signature, no callback);
        the order as ``GET /v1/orders`` serves it, ``orderId`` included."""
        request = {
            "externalOrderId": external_order_id,
            "externalUserId": external_user_id,
            "providerCode": provider_code,
            "currencyFrom": currency_from,
            "currencyTo": currency_to,
            "amountFrom": amount_from,
            "country": country,
        }
        problem = check_sell(request)
        if problem is not None:
            raise ValueError(problem[1])
        if created_at is not None and created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        order = new_order(request, created_at or datetime.now(UTC))
        return self._insert(order)

    def advance(self, order_id: str, status: str) -> dict[str, Any]:
        """Move an order (``externalOrderId`` or ``orderId``) to ``status``, in any order, and
        send its callback subject to the switches. KeyError: unknown order; ValueError: status."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; known: {', '.join(STATUSES)}")
        with self._lock:
            external = self._resolve(order_id)
            order = self._orders[external]
            apply_status(order, status)
            self.log.info("order %s -> %s", external, status)
            self._emit_locked(external)
            return copy.deepcopy(order)

    def resend(self, order_id: str) -> dict[str, Any]:
        """Send the order's callback again, at its present status. KeyError when unknown."""
        with self._lock:
            external = self._resolve(order_id)
            self._emit_locked(external)
            return copy.deepcopy(self._orders[external])

    def order(self, order_id: str) -> dict[str, Any]:
        """The order (by ``externalOrderId`` or ``orderId``). Raises KeyError when unknown."""
        with self._lock:
            return copy.deepcopy(self._orders[self._resolve(order_id)])

    def set_switches(
        self, order_id: str | None = None, *, reset: bool = False, **switches: Any
    ) -> dict[str, Any]:
        """The kit's, and an order may be named by its ``orderId`` too."""
        if order_id is not None:
            with self._lock:
                order_id = self._ids.get(order_id, order_id)
        return super().set_switches(order_id, reset=reset, **switches)

    # -- internals: orders and callbacks

    def _resolve(self, order_id: str) -> str:
        with self._lock:
            if order_id in self._orders:
                return order_id
            if order_id in self._ids:
                return self._ids[order_id]
        raise KeyError(order_id)

    def _insert(self, order: dict[str, Any]) -> dict[str, Any]:
        external = order["externalOrderId"]
        with self._lock:
            if external in self._orders:
                raise ValueError(f"duplicate externalOrderId {external!r}")
            self._orders[external] = order
            self._ids[order["orderId"]] = external
            self.log.info("order %s created at %s", external, order["status"])
            return copy.deepcopy(order)

    def _emit_locked(self, external: str) -> None:
        order = self._orders[external]
        signature = signing.sign_callback(order["orderId"], self._callback_private_key)
        self._send_callback(
            external,
            order["status"],
            compact(order),
            headers={signing.CALLBACK_SIGNATURE_HEADER: signature},
        )

    # -- internals: HTTP

    def _handle(self, request: Request) -> Reply:
        if not request.path.startswith("/v1/"):
            return _error(404, "notFound", "Not found")
        limited = self._take_rate_limit()
        if limited is not None:
            return limited
        if not self._authentic(request):
            return _error(401, "unauthorized", "Unauthorized")
        try:
            endpoint, values = route(API, request)
        except HTTPException as exc:
            if exc.code == 405:
                return _error(405, "validation", "Method not allowed")
            return _error(404, "notFound", "Not found")
        return getattr(self, endpoint)(request, **values)

    def _take_rate_limit(self) -> Reply | None:
        with self._lock:
            if not self._faults.consume("rate_limit"):
                return None
            switches = self._effective(None)
            left, retry_after = switches["rate_limit"], switches["retry_after"]
        self.log.info("answering 429 by switch (%d left)", left)
        return (
            429,
            _error_body("tooManyRequests", "Too many requests"),
            {"Retry-After": str(math.ceil(retry_after))},
        )

    def _authentic(self, request: Request) -> bool:
        key = request.headers.get(signing.API_KEY_HEADER) or ""
        signature = request.headers.get(signing.SIGNATURE_HEADER) or ""
        host = request.headers.get("Host") or f"{self.host}:{self.port}"
        url = f"http://{host}{request.target}"
        key_ok = hmac.compare_digest(key.encode("utf-8"), self.api_key.encode("utf-8"))
        signed = signing.verify_request(url, request.raw or None, signature, self.partner_public_key)
        if not (key_ok and signed):
            self.log.info(
                "%s %s refused: %s",
                request.method,
                request.path,
                "bad key" if not key_ok else "bad signature",
            )
        return key_ok and signed

    def _api_create(self, request: Request) -> Reply:
        body = parse_object(request.raw)
        if body is None:
            return _error(400, "validation", "Body must be a JSON object")
        problem = check_sell(body)
        if problem is not None:
            kind, message, cause = problem
            details = [{"cause": cause[0], "value": cause[1]}] if cause else None
            return _error(400, kind, message, details)
        order = new_order(body, datetime.now(UTC))
        try:
            self._insert(order)
        except ValueError:
            return _error(400, "validation", "externalOrderId already used")
        answer: dict[str, Any] = {
            "redirectUrl": order["redirectUrl"],
            "orderId": order["orderId"],
            "externalUserId": order["externalUserId"],
            "externalOrderId": order["externalOrderId"],
            "providerCode": order["providerCode"],
            "currencyFrom": order["currencyFrom"],
            "currencyTo": order["currencyTo"],
            # The create answer has amountFrom as a number (seed S3 sample; doc bug C-2).
            "amountFrom": js_number(order["amountFrom"]),
        }
        for name in ("country", *SELL_OPTIONAL):
            answer[name] = order.get(name)
        answer["createdAt"] = order["createdAt"]
        return 200, answer

    def _api_list(self, request: Request) -> Reply:
        filters: dict[str, set[str]] = {}
        for key, values in request.query.items():
            match = _FILTER_NAME.match(key)
            name = match.group("name") if match else key
            if name in LIST_FILTERS:
                filters.setdefault(name, set()).update(values)
            elif name not in LIST_SCALARS or key != name:
                return _error(400, "validation", f"Unknown query parameter {key[:64]}")
        try:
            start = _query_date(request.arg("startDate"), "startDate")
            end = _query_date(request.arg("endDate"), "endDate")
            offset = _query_int(request.arg("offset"), "offset", 0, 0, 10**9)
            limit = _query_int(request.arg("limit"), "limit", MAX_LIMIT, 1, MAX_LIMIT)
        except ValueError as exc:
            return _error(400, "validation", str(exc))
        named = self._named_order(filters)
        if self._detail_fault(named):
            self.log.info("GET %s: failing by switch (503)", ORDERS_PATH)
            return _error(503, "unavailable", "Service unavailable")
        misanswer = self._detail_misanswer(named)
        if misanswer is not None:
            return misanswer
        with self._lock:
            found = [
                copy.deepcopy(o)
                for o in self._orders.values()
                if all(str(o.get(name)) in wanted for name, wanted in filters.items())
                and (start is None or parse_time(o["createdAt"]) >= start)
                and (end is None or parse_time(o["createdAt"]) <= end)
            ]
        found.sort(key=lambda o: (o["createdAt"], o["orderId"]))
        page = found[offset : offset + limit]
        if self.response_shape == "array":
            return 200, page
        return 200, {"orders": page, "limit": limit, "offset": offset, "total": len(found)}

    def _named_order(self, filters: Mapping[str, set[str]]) -> str | None:
        """The externalOrderId when the filters name exactly one order (for per-order switches)."""
        for name in ("orderId", "externalOrderId"):
            values = filters.get(name)
            if values and len(values) == 1:
                try:
                    return self._resolve(next(iter(values)))
                except KeyError:
                    return None
        return None

    def _api_patch(self, request: Request, order_id: str) -> Reply:
        body = parse_object(request.raw)
        status = body.get("status") if body is not None else None
        if status not in STATUSES:
            return _error(
                400,
                "validation",
                "status must be one of " + ", ".join(STATUSES),
                [{"cause": "status", "value": str(status)[:64]}],
            )
        if not self._is_order_id(order_id):
            return _error(404, "notFound", "Order not found")
        return 200, self.advance(order_id, status)

    def _api_resend(self, request: Request, order_id: str) -> Reply:
        if not self._is_order_id(order_id):
            return _error(404, "notFound", "Order not found")
        order = self.resend(order_id)
        return 200, {"orderId": order["orderId"], "status": order["status"]}

    def _is_order_id(self, order_id: str) -> bool:
        with self._lock:
            return order_id in self._ids

    # -- control API (under /sandbox/, beside the kit's routes)

    control_rules = (
        Rule("/orders", methods=["POST"], endpoint="_control_create"),
        Rule("/orders/<order_id>/advance", methods=["POST"], endpoint="_control_advance"),
        Rule("/public-key", methods=["GET"], endpoint="_control_public_key"),
    )

    def _control_create(self, body: dict[str, Any]) -> Reply:
        try:
            order = self.create_order(
                body.get("externalOrderId"),  # type: ignore[arg-type]
                amount_from=body.get("amountFrom", "0.01"),
                currency_from=body.get("currencyFrom", "BTC"),
                currency_to=body.get("currencyTo", "EUR"),
            )
        except ValueError as exc:
            return 400, {"error": str(exc)}
        return 200, order

    def _control_advance(self, body: dict[str, Any], order_id: str) -> Reply:
        status = body.get("status")
        if status not in STATUSES:
            return 400, {"error": f"unknown status; known: {', '.join(STATUSES)}"}
        try:
            return 200, self.advance(order_id, status)
        except KeyError:
            return 404, {"error": "unknown order"}

    def _control_public_key(self, body: dict[str, Any]) -> Reply:
        return 200, {"pem": self.callback_public_key_pem.decode("ascii")}


# -- helpers


def _error_body(kind: str, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"errorType": kind, "errorMessage": message, "errorDetails": details}


def _error(status: int, kind: str, message: str, details: list[dict[str, str]] | None = None) -> Reply:
    return status, _error_body(kind, message, details)


def _query_date(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 date-time") from None


def _query_int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not re.fullmatch(r"\d{1,10}", value) or not low <= int(value) <= high:
        raise ValueError(f"{name} must be an integer {low}..{high}")
    return int(value)
