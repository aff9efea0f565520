"""A real HTTP fake of AliX Pay, for tests and local development.

It speaks the three partner endpoints the client uses (create sell order, create
cash-out, order detail) over the kit's Werkzeug server bound to 127.0.0.1,
verifies our request signatures exactly as documented (the pipe-joined strings of
providers.md 1.2, with doc bug A-8 resolved as the client resolves it), and signs
every order object it serves (answers and IPNs) with its own AliX key over
``externalOrderId|type|fiatAmount|status|<secret>``. Which secret ends that
string is unconfirmed at the real AliX (doc bug A-3), so it is a choice here:
``ipn_secret="webhook"`` (the ``webhookSecretKey`` the order was created with) or
``"secret"`` (the partner API secret key).

Faults are switched on globally or per order (a per-order switch overrides the
global one): ``drop``, ``drop_rate`` (+ ``seed``), ``duplicate``, ``delay``,
``reorder`` (hold IPNs until ``flush()``, then deliver them newest first),
``detail_delay``, ``detail_fail``, ``ipn_on_create``. A control API under
``/sandbox/`` mirrors the Python API so that a dev runner in another process can
drive it.

IPNs are POSTed by one background worker, one attempt each (AliX documents no
retries), 5 s timeout, in due-time order; what was actually POSTed is recorded in
``deliveries``. Only loopback addresses are served or called. The server, the
switches and the IPN courier are the shared ``devkit.kit``.

Run it: ``python -m devkit.alixpay.sandbox --help``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule

from config import Named
from devkit.kit import (
    Reply,
    Request,
    SandboxKit,
    check_nonempty,
    compact,
    finite_number,
    load_or_create_rsa_key,
    load_rsa_public_key,
    new_rsa_key,
    parse_object,
    route,
    rules_map,
    run_cli,
)
from orders.providers.alixpay import signing
from orders.providers.alixpay.client import CASHOUT_PATH, DETAILS_PATH, SELL_ORDER_PATH

STATUSES = (
    "AWAITING_PAYMENT",
    "PAYMENT_COMPLETED",
    "PROCESSING_TOKEN_TRANSFER",
    "SUCCESS",
    "FAIL",
    "ERROR",
)
INITIAL_STATUS = "AWAITING_PAYMENT"
ORDER_TYPES = ("sell", "cashout")
IPN_BY_WEBHOOK_KEY = "webhook"  # the webhookSecretKey the order was created with
IPN_BY_PARTNER_KEY = "secret"  # the partner API secretKey
IPN_SECRETS = (IPN_BY_WEBHOOK_KEY, IPN_BY_PARTNER_KEY)

CASHOUT_MIN_FIAT = 50_000  # "VND 10000 (Sandbox: 50000)" (S1)
PRICE_PER_TOKEN = 25_000  # fiat per token; a fixed fake rate
ORDER_TTL = timedelta(minutes=30)
MAX_ORDER_ID = 128

# The request strings AliX verifies, as documented (field names; dotted = nested).
SELL_SIGNED = ("partnerCode", "externalOrderId", "currency", "amount", "network", "paymentMethod", "bankCode")
CASHOUT_SIGNED = (
    "partnerCode",
    "externalOrderId",
    "cryptoCurrency",
    "fiatAmount",
    "extendInfo.recipientBankCode",
    "extendInfo.recipientNumber",
    "extendInfo.transferContent",
    "userEmail",
)
DETAILS_SIGNED = ("partnerCode", "externalOrderId")

SELL_REQUIRED = (
    "partnerCode",
    "externalOrderId",
    "currency",
    "fiatAmount",
    "network",
    "bankCode",
    "bankAccountNumber",
    "bankAccountName",
    "webhookSecretKey",
    "signature",
)
CASHOUT_REQUIRED = (
    "partnerCode",
    "externalOrderId",
    "cryptoCurrency",
    "fiatAmount",
    "userEmail",
    "webhookSecretKey",
    "signature",
)
DETAILS_REQUIRED = ("partnerCode", "externalOrderId", "signature")
API = rules_map(
    Rule(path, methods=["POST"], endpoint=api)
    for path, api in ((SELL_ORDER_PATH, "sell"), (CASHOUT_PATH, "cashout"), (DETAILS_PATH, "details"))
)
NUMERIC_FIELDS = frozenset({"fiatAmount"})

DESCRIPTIONS = {
    "AWAITING_PAYMENT": "Order created, awaiting payment",
    "PAYMENT_COMPLETED": "Payment completed",
    "PROCESSING_TOKEN_TRANSFER": "Processing token transfer",
    "SUCCESS": "Transaction completed",
    "FAIL": "Transaction failed",
    "ERROR": "Transaction error",
}

# Beyond the kit's common switches (drop, drop_rate, seed, duplicate, delay, reorder).
EXTRA_SWITCHES: dict[str, Any] = {
    "detail_delay": 0.0,
    "detail_fail": False,
    "ipn_on_create": False,
}


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
        if not _valid_order_id(external_order_id):
            raise ValueError(f"externalOrderId must be a string of 1..{MAX_ORDER_ID} characters")
        if not _positive_number(fiat_amount):
            raise ValueError("fiatAmount must be a positive number")
        if type not in ORDER_TYPES:
            raise ValueError(f"type must be one of {', '.join(ORDER_TYPES)}")
        order = _new_order(external_order_id, type, fiat_amount)
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
            _apply_status(order, status)
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
        fields = [_dig(body, name) for name in names]
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
        missing = [name for name in required if not _present(body.get(name), numeric=name in NUMERIC_FIELDS)]
        if missing:
            return f"missing or invalid fields: {', '.join(missing)}"
        if body["partnerCode"] != self.partner_code:
            return "unknown partnerCode"
        if not self._request_signed(body, signed):
            return "signature does not verify"
        if not _valid_order_id(body["externalOrderId"]):
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
        if not _positive_number(fiat):
            return self._refuse("fiatAmount must be a positive number")
        amount = body.get("amount")
        if amount is not None and not _positive_number(amount):
            return self._refuse("amount must be a positive number")
        if kind == "sell":
            order = _new_order(
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
            order = _new_order(
                body["externalOrderId"],
                "cashout",
                fiat,
                currency=body["cryptoCurrency"],
                network="",
                bank_name=_text(extend.get("recipientBankCode")),
                bank_account_name=_text(extend.get("recipientName")),
                bank_account_number=_text(extend.get("recipientNumber")),
                content=_text(extend.get("transferContent")),
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


# -- helpers


def _positive_number(value: Any) -> bool:
    return finite_number(value) and value > 0


def _present(value: Any, numeric: bool = False) -> bool:
    if numeric:
        return finite_number(value)
    return isinstance(value, str) and value.strip() != ""


def _valid_order_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ORDER_ID and value.strip() == value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dig(body: dict[str, Any], dotted: str) -> Any:
    value: Any = body
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _js_time(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_order(
    external_order_id: str,
    type_: str,
    fiat_amount: float,
    *,
    currency: str = "USDT",
    network: str = "TRC20",
    amount: float | None = None,
    bank_name: str = "",
    bank_account_name: str = "",
    bank_account_number: str = "",
    content: str = "",
) -> dict[str, Any]:
    now = datetime.now(UTC)
    digest = hashlib.sha256(external_order_id.encode("utf-8")).hexdigest()
    token_amount = amount if amount is not None else round(fiat_amount / PRICE_PER_TOKEN, 6)
    return {
        "externalOrderId": external_order_id,
        "type": type_,
        "fiatAmount": fiat_amount,
        "paidAmount": 0,
        "tokenTransfer": {
            "currency": currency,
            "network": network,
            "price": PRICE_PER_TOKEN,
            "amount": token_amount,
            "walletAddress": "TSandbox" + digest[:26],
            "txHash": "",
        },
        "bankTransfer": {
            "bankAccountName": bank_account_name,
            "bankAccountNumber": bank_account_number,
            "bankName": bank_name,
            "contentPayment": content or f"ALIX {digest[:10].upper()}",
            "totalPayment": fiat_amount,
            "qrUrl": "",
        },
        "fees": {"systemFee": 0, "processingFee": 0},
        "status": INITIAL_STATUS,
        "description": DESCRIPTIONS[INITIAL_STATUS],
        "createdAt": _js_time(now),
        "expiresAt": _js_time(now + ORDER_TTL),
    }


def _apply_status(order: dict[str, Any], status: str) -> None:
    order["status"] = status
    order["description"] = DESCRIPTIONS[status]
    if status in ("PAYMENT_COMPLETED", "PROCESSING_TOKEN_TRANSFER", "SUCCESS"):
        order["paidAmount"] = order["fiatAmount"]
    if status in ("PROCESSING_TOKEN_TRANSFER", "SUCCESS") and not order["tokenTransfer"].get("txHash"):
        seed = f"{order['externalOrderId']}|tx".encode()
        order["tokenTransfer"]["txHash"] = "0x" + hashlib.sha256(seed).hexdigest()


# -- CLI


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partner-code", required=True)
    p.add_argument("--secret-key", required=True, help="the partner API secret key")
    p.add_argument("--webhook-secret-key", required=True)
    p.add_argument(
        "--partner-public-key", required=True, metavar="PATH", help="PEM of the partner's public key"
    )
    p.add_argument(
        "--alix-key-dir",
        default=None,
        metavar="DIR",
        help="keep AliX's key pair here (alix_private.pem, alix_public.pem); reused across restarts",
    )
    p.add_argument(
        "--ipn-secret",
        choices=IPN_SECRETS,
        default=IPN_BY_WEBHOOK_KEY,
        help="which secret ends signed strings",
    )
    p.add_argument("--envelope", action="store_true", help="wrap answers in {success, message, data}")


def _build(args: argparse.Namespace) -> AlixSandbox:
    partner_key = load_rsa_public_key(Path(args.partner_public_key))
    alix_key = None
    if args.alix_key_dir:
        key_dir = Path(args.alix_key_dir)
        # PKCS#8 private, SubjectPublicKeyInfo public: the kit's defaults
        alix_key = load_or_create_rsa_key(key_dir / "alix_private.pem", key_dir / "alix_public.pem")
    return AlixSandbox(
        partner_code=args.partner_code,
        secret_key=args.secret_key,
        webhook_secret_key=args.webhook_secret_key,
        partner_public_key=partner_key,
        alix_private_key=alix_key,
        callback_url=args.callback_url,
        ipn_secret=args.ipn_secret,
        envelope=args.envelope,
        port=args.port,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(
        AlixSandbox.name,
        argv,
        description="A fake AliX Pay on 127.0.0.1 (orders in memory; control API under /sandbox/).",
        callback_help="where IPNs are POSTed (loopback only)",
        add_arguments=_arguments,
        build=_build,
    )


if __name__ == "__main__":
    raise SystemExit(main())
