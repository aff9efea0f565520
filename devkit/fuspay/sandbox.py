"""A real HTTP fake of Fuspay Axis, for tests and local development.

It speaks the endpoints rampwatch uses over the shared kit's server on
127.0.0.1: ``POST /Axis/InitiateSellOrder/``, ``GET /Axis/GetOrder/``,
``GET /Axis/FetchTransferStatus`` and the signing oracle
``POST /PartnerP2P/SignRequestSha512/``. Each checks ``Authorization: Bearer
<secret key>`` and ``x-partner-id`` (401 ``{error: true, message, data: null}``
otherwise). Creating a sell order emits ``event.sell.init`` to the order's
``partner_callback_url``; ``advance`` moves an order through its events, updating
payment sub-statuses and the payout as Fuspay would, and emits each event.

Event bodies follow the field order of the seed samples (docs/providers.md 2.3; the
buy body is constructed from the reference, no sample exists) and are sent as
``JSON.stringify`` would send them, signed by the sandbox's ``recipe`` over the
body less ``signature`` with the key material of ``key_mode``: the settings
rampwatch must match (doc bug F-7). The oracle signs by the same recipe with
whatever ``secret`` it is given, as Fuspay's does.

``getorder_shape="event"`` answers GetOrder with the order including its
``event_name``; ``"statuses"`` leaves the event name out, so that the poller must
derive the status from the payment sub-statuses (GetOrder's data is undocumented,
doc bug F-10). Fault switches (the kit's, plus the order-detail faults
``detail_delay``, ``detail_fail``, ``detail_throttle``, ``detail_redirect`` and
``detail_garbage`` for GetOrder and FetchTransferStatus) work globally or per order.
Personal data is never logged.

Run it alone: ``python -m devkit.fuspay --help`` (``devkit.fuspay.cli``); its orders
and event bodies are ``devkit.fuspay.model``.
"""

from __future__ import annotations

import copy
import hmac
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule

from devkit.fuspay.model import (
    BUY_EVENTS,
    BUY_RATE,
    CREATE_FIELDS,
    EVENTS,
    GETORDER_SHAPES,
    MAX_ORDER_ID,
    PAYOUT_MESSAGES,
    SELL_EVENTS,
    SELL_RATE,
    apply_event,
    buy_body,
    masked,
    number,
    sell_body,
    tidy,
)
from devkit.kit import (
    DETAIL_SWITCHES,
    Reply,
    Request,
    SandboxKit,
    check_loopback_url,
    check_nonempty,
    is_loopback_url,
    parse_object,
    route,
    rules_map,
)
from orders.providers.fuspay import signing
from orders.providers.fuspay.client import GET_ORDER_PATH, ORACLE_PATH, SELL_ORDER_PATH, TRANSFER_STATUS_PATH
from orders.providers.jsformat import js_stringify

EXTRA_SWITCHES: dict[str, Any] = dict(DETAIL_SWITCHES)

# Fuspay's paths differ in their trailing slash; with or without it, each is served.
API = rules_map(
    (
        Rule(path.rstrip("/") + "/", methods=[method], endpoint=endpoint)
        for path, method, endpoint in (
            (SELL_ORDER_PATH, "POST", "_api_create"),
            (GET_ORDER_PATH, "GET", "_api_get_order"),
            (TRANSFER_STATUS_PATH, "GET", "_api_transfer_status"),
            (ORACLE_PATH, "POST", "_api_oracle"),
        )
    ),
    strict_slashes=False,
)


class FuspaySandbox(SandboxKit):
    """An in-memory Fuspay Axis on 127.0.0.1. Thread-safe; see the module docstring."""

    name = "fuspay"
    extra_switches = EXTRA_SWITCHES
    status_field = "event_name"  # an order's last event
    known_steps = (*SELL_EVENTS, *BUY_EVENTS)
    step_noun = "events"

    def __init__(
        self,
        *,
        partner_id: str,
        public_key: str,
        secret_key: str,
        recipe: str = signing.HMAC_SHA512,
        key_mode: str = signing.PUBLIC_PLUS_SECRET,
        callback_url: str | None = None,
        getorder_shape: str = "event",
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        check_nonempty(partner_id=partner_id, public_key=public_key, secret_key=secret_key)
        if recipe not in signing.LOCAL_RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(signing.LOCAL_RECIPES)}")
        if key_mode not in signing.KEY_MODES:
            raise ValueError(f"key_mode must be one of {', '.join(signing.KEY_MODES)}")
        if getorder_shape not in GETORDER_SHAPES:
            raise ValueError(f"getorder_shape must be one of {', '.join(GETORDER_SHAPES)}")
        super().__init__(callback_url=callback_url, host=host, port=port)
        self.partner_id = partner_id
        self.public_key = public_key
        self.secret_key = secret_key
        self.recipe = recipe
        self.key_mode = key_mode
        self.getorder_shape = getorder_shape
        # per order: kind, callback URL, payout status (what FetchTransferStatus answers)
        self._private: dict[str, dict[str, Any]] = {}

    @property
    def signing_key(self) -> str:
        return signing.key_material(self.public_key, self.secret_key, self.key_mode)

    # -- orders (Python API)

    def create_order(
        self,
        partner_order_id: str,
        kind: str = "sell",
        *,
        crypto_amount: float | str = 100,
        fiat_amount: float | None = None,
        callback_url: str | None = None,
        chain: str = "usdt-trc20",
        fiat_currency: str = "NGN",
    ) -> dict[str, Any]:
        """Create an order and emit its ``init`` event (subject to the switches); the
        order, unsigned. ``callback_url`` defaults to the sandbox's."""
        if kind not in EVENTS:
            raise ValueError("kind must be sell or buy")
        self._create(
            partner_order_id,
            kind,
            crypto=number(crypto_amount, "crypto_amount"),
            fiat=None if fiat_amount is None else number(fiat_amount, "fiat_amount"),
            callback_url=callback_url,
            chain=chain,
            fiat_currency=fiat_currency,
            request={},
        )
        return self.order(partner_order_id)

    def advance(self, partner_order_id: str, event_name: str, **extra: Any) -> dict[str, Any]:
        """Move an order to ``event_name`` (any event of its kind, in any order) and emit
        it subject to the switches. ``extra`` overrides body fields (a dict merges into a
        dict) and ``payout_status`` sets what FetchTransferStatus answers. Raises
        KeyError (unknown order), ValueError (an event not of the order's kind)."""
        with self._lock:
            order = self._orders.get(partner_order_id)
            if order is None:
                raise KeyError(partner_order_id)
            private = self._private[partner_order_id]
            if event_name not in EVENTS[private["kind"]]:
                known = ", ".join(EVENTS[private["kind"]])
                raise ValueError(f"unknown {private['kind']} event {event_name!r}; known: {known}")
            set_payout = "payout_status" in extra
            payout = extra.pop("payout_status", None)
            if payout is not None and not isinstance(payout, str):
                raise ValueError("payout_status must be a string or None")
            apply_event(order, private, event_name)
            if set_payout:
                private["payout_status"] = payout
            for key, value in extra.items():
                if isinstance(value, dict) and isinstance(order.get(key), dict):
                    order[key].update(value)
                else:
                    order[key] = value
            self.log.info("order %s -> %s", partner_order_id, event_name)
            self._emit_locked(partner_order_id)
            return copy.deepcopy(order)

    def signed_event(self, partner_order_id: str) -> dict[str, Any]:
        """The order's present event body as Fuspay would post it, with its ``signature``."""
        with self._lock:
            return self._signed_locked(partner_order_id)

    # -- internals: orders and events

    def _create(
        self,
        order_id: Any,
        kind: str,
        *,
        crypto: float,
        fiat: float | None,
        callback_url: str | None,
        chain: str,
        fiat_currency: str,
        request: Mapping[str, Any],
    ) -> None:
        if (
            not isinstance(order_id, str)
            or not 0 < len(order_id) <= MAX_ORDER_ID
            or order_id.strip() != order_id
        ):
            raise ValueError(f"partner_order_id must be a string of 1..{MAX_ORDER_ID} characters")
        if callback_url is not None:
            check_loopback_url(callback_url, "partner_callback_url")
        rate = SELL_RATE if kind == "sell" else BUY_RATE
        fiat = fiat if fiat is not None else tidy(Decimal(str(crypto)) * rate)
        build = sell_body if kind == "sell" else buy_body
        body = build(
            order_id, f"{order_id}_{self.partner_id}", crypto, fiat, rate, chain, fiat_currency, request
        )
        body["partner_callback_url"] = callback_url or self.callback_url or ""
        with self._lock:
            if order_id in self._orders:
                raise ValueError(f"duplicate partner_order_id {order_id!r}")
            self._orders[order_id] = body
            self._private[order_id] = {
                "kind": kind,
                "callback_url": callback_url,
                "payout_status": None,
                "refund_wallet_address": request.get("refund_wallet_address")
                or body.get("pay_to_crypto_address"),
            }
            self.log.info("order %s created (%s)", order_id, kind)
            self._emit_locked(order_id)

    def _signed_locked(self, order_id: str) -> dict[str, Any]:
        order = copy.deepcopy(self._orders[order_id])
        signature = signing.sign(signing.unsigned(order), self.signing_key, self.recipe)
        # The samples carry the signature right after transactional_kyc, with the KYC
        # error and close fields after it; the signed serialisation skips it anyway.
        out: dict[str, Any] = {}
        for key, value in order.items():
            out[key] = value
            if key == "transactional_kyc":
                out["signature"] = signature
        out.setdefault("signature", signature)
        return out

    def _emit_locked(self, order_id: str) -> None:
        body = js_stringify(self._signed_locked(order_id)).encode("utf-8")
        url = self._private[order_id]["callback_url"]
        self._send_callback(order_id, self._orders[order_id]["event_name"], body, url=url)

    # -- internals: HTTP

    def _handle(self, request: Request) -> Reply:
        try:
            endpoint, _ = route(API, request)
        except HTTPException as exc:
            return exc.code or 404, _error("Method not allowed" if exc.code == 405 else "Not found")
        if not self._authorised(request):
            self.log.info("%s refused: bad credentials", request.path)
            return 401, _error("Unauthorized")
        return getattr(self, endpoint)(request)

    def _authorised(self, request: Request) -> bool:
        bearer = request.headers.get("Authorization") or ""
        partner = request.headers.get("x-partner-id") or ""
        ok_bearer = hmac.compare_digest(bearer.encode(), f"Bearer {self.secret_key}".encode())
        ok_partner = hmac.compare_digest(partner.encode(), self.partner_id.encode())
        return ok_bearer and ok_partner

    def _refuse(self, reason: str) -> Reply:
        self.log.info("request refused: %s", reason)
        return 400, _error(reason)

    def _api_create(self, request: Request) -> Reply:
        body = parse_object(request.raw)
        if body is None:
            return self._refuse("body must be a JSON object")
        missing = [n for n in CREATE_FIELDS if not isinstance(body.get(n), str) or not body[n].strip()]
        if missing:
            return self._refuse(f"missing or invalid fields: {', '.join(missing)}")
        unknown = sorted(set(body) - set(CREATE_FIELDS))
        if unknown:
            return self._refuse(f"unknown fields: {', '.join(unknown)}")
        chain = body["chain"]
        if "-" not in chain:
            return self._refuse("chain must look like usdt-trc20")
        if not is_loopback_url(body["partner_callback_url"]):
            return self._refuse("the sandbox calls only loopback partner_callback_url addresses")
        try:
            crypto = number(body["crypto_amount"], "crypto_amount")
            self._create(
                body["partner_order_id"],
                "sell",
                crypto=crypto,
                fiat=None,
                callback_url=body["partner_callback_url"],
                chain=chain,
                fiat_currency=body["fiat_currency_to_receive"],
                request=body,
            )
        except ValueError as exc:
            return self._refuse(str(exc))
        return 200, {"message": "OK"}

    def _slow_or_failing(self, order_id: str | None) -> Reply | None:
        if self._detail_fault(order_id):
            self.log.info("detail for order %s: failing by switch (503)", order_id)
            return 503, _error("Service unavailable")
        return self._detail_misanswer(order_id)

    def _api_get_order(self, request: Request) -> Reply:
        order_type, order_no = request.arg("order_type"), request.arg("order_no")
        failed = self._slow_or_failing(order_no)
        if failed is not None:
            return failed
        if order_type not in EVENTS or not order_no:
            return self._refuse("order_type (buy or sell) and order_no are required")
        with self._lock:
            order = self._orders.get(order_no)
            if order is None or self._private[order_no]["kind"] != order_type:
                return 404, {"success": False, "message": "Order not found", "data": None}
            data = copy.deepcopy(order)
        if self.getorder_shape == "statuses":
            data.pop("event_name", None)
        return 200, {"success": True, "message": "Order fetched successfully", "data": data}

    def _api_transfer_status(self, request: Request) -> Reply:
        order_id = request.arg("partner_order_id")
        failed = self._slow_or_failing(order_id)
        if failed is not None:
            return failed
        if not order_id:
            return self._refuse("partner_order_id is required")
        with self._lock:
            order = self._orders.get(order_id)
            private = self._private.get(order_id)
            if order is None or private is None or private["kind"] != "sell":
                return 404, {"success": False, "message": "Order not found", "data": None}
            payout = private["payout_status"]
            if payout is None:
                return 404, {"success": False, "message": "No transfer for this order yet", "data": None}
            account = order["seller_fiat_account"]
            data = {
                "status": payout,
                "message": PAYOUT_MESSAGES.get(payout, payout),
                "full_name": account.get("account_name", ""),
                "account_number": masked(account.get("account_number", "")),
                "session_id": "",
            }
        return 200, {"success": True, "data": data}

    def _api_oracle(self, request: Request) -> Reply:
        body = parse_object(request.raw)
        if body is None:
            return self._refuse("body must be a JSON object")
        secret = body.pop("secret", None)
        if not isinstance(secret, str) or not secret:
            return self._refuse("secret is required")
        return 200, {
            "success": True,
            "message": "OK",
            "data": {"signature": signing.sign(body, secret, self.recipe)},
        }

    # -- control API (under /sandbox/, beside the kit's routes)

    control_rules = (
        Rule("/orders", methods=["POST"], endpoint="_control_create"),
        Rule("/orders/<order_id>/advance", methods=["POST"], endpoint="_control_advance"),
    )

    def _control_create(self, body: dict[str, Any]) -> Reply:
        try:
            order = self.create_order(
                body.get("partner_order_id"),  # type: ignore[arg-type]
                body.get("kind") or "sell",
                crypto_amount=body.get("crypto_amount", 100),
                fiat_amount=body.get("fiat_amount"),
                callback_url=body.get("callback_url"),
            )
        except (TypeError, ValueError) as exc:
            return 400, {"error": str(exc)}
        return 200, order

    def _control_advance(self, body: dict[str, Any], order_id: str) -> Reply:
        extra = dict(body)
        event = extra.pop("event", None)
        try:
            return 200, self.advance(order_id, event, **extra)  # type: ignore[arg-type]
        except KeyError:
            return 404, {"error": "unknown order"}
        except (TypeError, ValueError) as exc:
            return 400, {"error": str(exc)}


def _error(message: str) -> dict[str, Any]:
    return {"error": True, "message": message, "data": None}
