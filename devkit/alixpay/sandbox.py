"""A real HTTP fake of AliX Pay, for tests and local development.

It speaks the three partner endpoints the client uses (create sell order, create
cash-out, order detail) over the kit's Werkzeug server bound to 127.0.0.1,
verifies our request signatures exactly as documented (the pipe-joined strings of
docs/providers.md 1.2, with doc bug A-8 resolved as the client resolves it), and signs
every order object it serves (answers and IPNs) with its own AliX key over
``externalOrderId|type|fiatAmount|status|<secret>``. Which secret ends that
string is unconfirmed at the real AliX (doc bug A-3), so it is a choice here:
``ipn_secret="webhook"`` (the ``webhookSecretKey`` the order was created with) or
``"secret"`` (the partner API secret key).

Faults are switched on globally or per order (a per-order switch overrides the
global one): ``drop``, ``drop_rate`` (+ ``seed``), ``duplicate``, ``delay``,
``reorder`` (hold IPNs until ``flush()``, then deliver them newest first),
``ipn_on_create`` and the order-detail faults (``detail_delay``, ``detail_fail``,
``detail_throttle``, ``detail_redirect``, ``detail_garbage``: ``devkit.kit.switches``). A control API under
``/sandbox/`` mirrors the Python API so that a dev runner in another process can
drive it.

IPNs are POSTed by one background worker, one attempt each (AliX documents no
retries), 5 s timeout, in due-time order; what was actually POSTed is recorded in
``deliveries``. Only loopback addresses are served or called. The server, the
switches and the IPN courier are the shared ``devkit.kit``.

Run it alone: ``python -m devkit.alixpay --help`` (``devkit.alixpay.cli``); its orders
are ``devkit.alixpay.model``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule

from config import Named
from devkit.alixpay.model import (
    CASHOUT_MIN_FIAT,
    CASHOUT_REQUIRED,
    CASHOUT_SIGNED,
    DETAILS_REQUIRED,
    DETAILS_SIGNED,
    MAX_ORDER_ID,
    NUMERIC_FIELDS,
    ORDER_TYPES,
    SELL_REQUIRED,
    SELL_SIGNED,
    STATUSES,
    apply_status,
    dig,
    new_order,
    positive_number,
    present,
    text,
    valid_order_id,
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
from orders.providers.alixpay import signing
from orders.providers.alixpay.client import CASHOUT_PATH, DETAILS_PATH, SELL_ORDER_PATH

IPN_BY_WEBHOOK_KEY = "webhook"  # the webhookSecretKey the order was created with
IPN_BY_PARTNER_KEY = "secret"  # the partner API secretKey
IPN_SECRETS = (IPN_BY_WEBHOOK_KEY, IPN_BY_PARTNER_KEY)

API = rules_map(
    Rule(path, methods=["POST"], endpoint=api)
    for path, api in ((SELL_ORDER_PATH, "sell"), (CASHOUT_PATH, "cashout"), (DETAILS_PATH, "details"))
)

# Beyond the kit's common switches (drop, drop_rate, seed, duplicate, delay, reorder).
EXTRA_SWITCHES: dict[str, Any] = {**DETAIL_SWITCHES, "ipn_on_create": False}


class AlixSandbox(SandboxKit):
    """An in-memory AliX Pay on 127.0.0.1. Thread-safe; see the module docstring."""

    name = "alixpay"
    extra_switches = EXTRA_SWITCHES
    known_steps = STATUSES
    step_noun = "statuses"

    def __init__(
        self,
        *,
        partner_code: str,
        secret_key: str,
        webhook_secret_key: str,
        partner_public_key: RSAPublicKey,
        alix_private_key: RSAPrivateKey | None = None,
        callback_url: str | None = None,
        ipn_secret: str = IPN_BY_WEBHOOK_KEY,
        envelope: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        check_nonempty(
            partner_code=partner_code, secret_key=secret_key, webhook_secret_key=webhook_secret_key
        )
        if not isinstance(partner_public_key, RSAPublicKey):
            raise TypeError("partner_public_key must be an RSA public key")
        if alix_private_key is not None and not isinstance(alix_private_key, RSAPrivateKey):
            raise TypeError("alix_private_key must be an RSA private key")
        if ipn_secret not in IPN_SECRETS:
            raise ValueError(f"ipn_secret must be one of {', '.join(IPN_SECRETS)}")
        super().__init__(callback_url=callback_url, host=host, port=port)
        self.partner_code = partner_code
        self.secret_key = secret_key
        self.webhook_secret_key = webhook_secret_key
        self.partner_public_key = partner_public_key
        self.ipn_secret = ipn_secret
        self.envelope = envelope
        self._alix_private_key = alix_private_key or new_rsa_key()
        self._order_webhook_secrets: dict[str, str] = {}

    @property
    def alix_public_key(self) -> RSAPublicKey:
        return self._alix_private_key.public_key()

    @property
    def alix_public_key_pem(self) -> bytes:
        return self.alix_public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    # -- orders (Python API)

    def create_order(self, external_order_id: str, fiat_amount: float, type: str = "sell") -> dict[str, Any]:
        """Create an order at AWAITING_PAYMENT directly (no request signature); the order, unsigned."""
        if not valid_order_id(external_order_id):
            raise ValueError(f"externalOrderId must be a string of 1..{MAX_ORDER_ID} characters")
        if not positive_number(fiat_amount):
            raise ValueError("fiatAmount must be a positive number")
        if type not in ORDER_TYPES:
            raise ValueError(f"type must be one of {', '.join(ORDER_TYPES)}")
        order = new_order(external_order_id, type, fiat_amount)
        self._insert(order, self.webhook_secret_key)
        return self.order(external_order_id)

    def advance(self, external_order_id: str, status: str) -> dict[str, Any]:
        """Move an order to ``status`` (any known status, in any order) and emit its IPN
        subject to the switches. Raises KeyError (unknown order), ValueError (unknown status)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; known: {', '.join(STATUSES)}")
        with self._lock:
            order = self._orders.get(external_order_id)
            if order is None:
                raise KeyError(external_order_id)
            apply_status(order, status)
            self.log.info("order %s -> %s", external_order_id, status)
            self._emit_locked(external_order_id)
            return copy.deepcopy(order)

    def signed_order(self, external_order_id: str) -> dict[str, Any]:
        """The order as AliX would serve it now: with its ``signature``. Raises KeyError."""
        with self._lock:
            if external_order_id not in self._orders:
                raise KeyError(external_order_id)
            return self._signed_locked(external_order_id)

    # -- internals: orders and signing

    def _emit_locked(self, order_id: str) -> None:
        status = self._orders[order_id]["status"]
        if self.callback_url is None:
            self.log.debug("no callback_url: IPN for order %s (%s) not sent", order_id, status)
            return
        self._send_callback(order_id, status, compact(self._signed_locked(order_id)))

    def _insert(self, order: dict[str, Any], webhook_secret: str) -> dict[str, Any]:
        """Store a new order; its signed form. Raises ValueError on a duplicate id."""
        order_id = order["externalOrderId"]
        with self._lock:
            if order_id in self._orders:
                raise ValueError(f"duplicate externalOrderId {order_id!r}")
            self._orders[order_id] = order
            self._order_webhook_secrets[order_id] = webhook_secret
            self.log.info("order %s created (%s) at %s", order_id, order["type"], order["status"])
            if self._effective(order_id)["ipn_on_create"]:
                self._emit_locked(order_id)
            return self._signed_locked(order_id)

    def _signing_secret(self, order_id: str) -> str:
        if self.ipn_secret == IPN_BY_PARTNER_KEY:
            return self.secret_key
        return self._order_webhook_secrets.get(order_id, self.webhook_secret_key)

    def _signed_locked(self, order_id: str) -> dict[str, Any]:
        order = copy.deepcopy(self._orders[order_id])
        order.pop("signature", None)
        order["signature"] = signing.sign(
            signing.response_fields(order), self._signing_secret(order_id), self._alix_private_key
        )
        return order

    def _request_signed(self, body: dict[str, Any], names: Sequence[str]) -> bool:
        signature = body.get("signature")
        if not isinstance(signature, str):
            return False
        fields = [dig(body, name) for name in names]
        try:
            return (
                signing.verify(
                    fields,
                    signature,
                    [Named("partner_public_key", self.partner_public_key)],
                    [Named("secret_key", self.secret_key)],
                )
                is not None
            )
        except TypeError:  # a nested object where a scalar is signed
            return False

    # -- internals: HTTP

    def _handle(self, request: Request) -> Reply:
        try:
            api, _ = route(API, request)
        except HTTPException as exc:
            return exc.code or 404, {"error": "Method not allowed" if exc.code == 405 else "Not found"}
        if api == "details":
            return self._api_details(request.raw)
        return self._api_create(request.raw, api)

    def _answer(self, order: dict[str, Any]) -> Reply:
        if self.envelope:
            return 200, {"success": True, "message": "OK", "data": order}
        return 200, order

    def _refuse(self, reason: str) -> Reply:
        self.log.info("request refused: %s", reason)
        if self.envelope:
            return 400, {"success": False, "message": "Invalid request", "data": None}
        return 400, {"error": "Invalid request"}

    def _check_request(
        self, body: dict[str, Any] | None, required: Sequence[str], signed: Sequence[str]
    ) -> str | None:
        """Why a partner request is refused, or None when it is acceptable."""
        if body is None:
            return "body is not a JSON object"
        missing = [name for name in required if not present(body.get(name), numeric=name in NUMERIC_FIELDS)]
        if missing:
            return f"missing or invalid fields: {', '.join(missing)}"
        if body["partnerCode"] != self.partner_code:
            return "unknown partnerCode"
        if not self._request_signed(body, signed):
            return "signature does not verify"
        if not valid_order_id(body["externalOrderId"]):
            return "externalOrderId too long"
        return None

    def _api_create(self, raw: bytes, kind: str) -> Reply:
        body = parse_object(raw)
        if kind == "sell":
            problem = self._check_request(body, SELL_REQUIRED, SELL_SIGNED)
        else:
            problem = self._check_request(body, CASHOUT_REQUIRED, CASHOUT_SIGNED)
        if problem is not None:
            return self._refuse(problem)
        assert body is not None
        fiat = body["fiatAmount"]
        if not positive_number(fiat):
            return self._refuse("fiatAmount must be a positive number")
        amount = body.get("amount")
        if amount is not None and not positive_number(amount):
            return self._refuse("amount must be a positive number")
        if kind == "sell":
            order = new_order(
                body["externalOrderId"],
                "sell",
                fiat,
                currency=body["currency"],
                network=body["network"],
                amount=amount,
                bank_name=body["bankCode"],
                bank_account_name=body["bankAccountName"],
                bank_account_number=body["bankAccountNumber"],
            )
        else:
            if fiat < CASHOUT_MIN_FIAT:
                return self._refuse(f"fiatAmount below the sandbox minimum of {CASHOUT_MIN_FIAT}")
            if body.get("fiatCurrency") not in (None, "", "VND"):
                return self._refuse("cash-out supports VND only")
            extend = body.get("extendInfo") if isinstance(body.get("extendInfo"), dict) else {}
            order = new_order(
                body["externalOrderId"],
                "cashout",
                fiat,
                currency=body["cryptoCurrency"],
                network="",
                bank_name=text(extend.get("recipientBankCode")),
                bank_account_name=text(extend.get("recipientName")),
                bank_account_number=text(extend.get("recipientNumber")),
                content=text(extend.get("transferContent")),
            )
        try:
            signed = self._insert(order, body["webhookSecretKey"])
        except ValueError:
            return self._refuse("duplicate externalOrderId")
        return self._answer(signed)

    def _api_details(self, raw: bytes) -> Reply:
        body = parse_object(raw)
        order_id = body.get("externalOrderId") if body is not None else None
        if self._detail_fault(order_id if isinstance(order_id, str) else None):
            self.log.info("details for order %s: failing by switch (503)", order_id)
            return 503, {"error": "Service unavailable"}
        misanswer = self._detail_misanswer(order_id if isinstance(order_id, str) else None)
        if misanswer is not None:
            return misanswer
        problem = self._check_request(body, DETAILS_REQUIRED, DETAILS_SIGNED)
        if problem is not None:
            return self._refuse(problem)
        with self._lock:
            if order_id not in self._orders:
                return self._refuse("unknown order")
            signed = self._signed_locked(order_id)
        return self._answer(signed)

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
                body.get("fiatAmount"),  # type: ignore[arg-type]
                body.get("type") or "sell",
            )
        except ValueError as exc:
            return 400, {"error": str(exc)}
        return 200, order

    def _control_advance(self, body: dict[str, Any], order_id: str) -> Reply:
        with self._lock:
            if order_id not in self._orders:
                return 404, {"error": "unknown order"}
        status = body.get("status")
        if status not in STATUSES:
            return 400, {"error": f"unknown status; known: {', '.join(STATUSES)}"}
        return 200, self.advance(order_id, status)

    def _control_public_key(self, body: dict[str, Any]) -> Reply:
        return 200, {"pem": self.alix_public_key_pem.decode("ascii")}
