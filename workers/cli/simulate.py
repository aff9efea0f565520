"""``rampwatch simulate``: post a callback signed as the provider signs it (like
``stripe trigger``), to try a receiver end to end.

It needs the provider's side of the signature, given as options: AliX's and
Changelly's private keys (``--key``; for ``make run`` the sandboxes' are under
``var/dev/``: ``alixpay_sandbox_private.pem``, ``changelly_sandbox_callback_private.pem``),
AliX's IPN secret and Fuspay's partner keys (``--secret``, ``--public-key``). The
signing is each provider's own (``orders/providers/<slug>/signing.py``), next to the
verification it must pass. Secrets given here are never printed.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from workers.cli.common import Failure, emit_json, json_option, provider_choice

TIMEOUT = 10.0


def _number(text: str | None) -> int | float | None:
    """An amount as the provider's JSON carries it: a number."""
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise Failure(f"--fiat-amount is not a number: {text!r}", code=2) from None
    if not value.is_finite() or value <= 0:
        raise Failure(f"--fiat-amount must be a positive number: {text!r}", code=2)
    return int(value) if value == value.to_integral_value() else float(value)


def _private_key(path: Path | None, provider: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    if path is None:
        raise Failure(f"{provider} signs with its RSA private key: give --key PATH", code=2)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise Failure(
            f"--key {path}: not a readable, unencrypted PEM private key ({type(exc).__name__})"
        ) from exc
    if not isinstance(key, RSAPrivateKey):
        raise Failure(f"--key {path}: not an RSA private key")
    return key


def signed_callback(
    provider: str,
    order_id: str,
    status: str,
    *,
    key: Path | None,
    secret: str | None,
    public_key: str | None,
    recipe: str,
    fiat_amount: str | None,
    order_type: str,
    external_id: str | None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a callback as ``provider`` would post it."""
    if provider == "alixpay":
        from orders.providers.alixpay import signing

        amount = _number(fiat_amount)
        if amount is None:
            raise Failure("an AliX IPN signs its fiatAmount: give --fiat-amount", code=2)
        if not secret:
            raise Failure("AliX ends the signed string with a secret: give --secret", code=2)
        body = signing.callback_body(
            order_id, status, amount, secret, _private_key(key, provider), order_type=order_type
        )
        return body, {}
    if provider == "changelly":
        from orders.providers.changelly import signing as changelly

        signature = changelly.sign_callback(order_id, _private_key(key, provider))
        body = changelly.callback_body(order_id, status, external_id)
        return body, {changelly.CALLBACK_SIGNATURE_HEADER: signature}
    if provider == "fuspay":
        from orders.providers.fuspay import signing as fuspay

        if not secret:
            raise Failure("Fuspay signs with the partner keys: give --secret (and --public-key)", code=2)
        mode = fuspay.PUBLIC_PLUS_SECRET if public_key else fuspay.SECRET_ONLY
        material = fuspay.key_material(public_key or "", secret, mode)
        event: dict[str, Any] = {"event_name": status, "partner_order_id": order_id}
        amount = _number(fiat_amount)
        if amount is not None:
            event["fiat_amount_to_receive" if ".sell." in status else "fiat_amount_to_pay"] = amount
        return fuspay.callback_body(event, material, recipe), {}
    raise Failure(f"no callback signing for {provider}", code=2)


@click.command()
@click.argument("provider", type=provider_choice())
@click.argument("order_id", metavar="ID")
@click.argument("status")
@click.option(
    "--url", required=True, help="The webhook to post to, e.g. http://127.0.0.1:5000/webhooks/alixpay."
)
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The provider's RSA private key, PEM (alixpay, changelly).",
)
@click.option("--secret", help="alixpay: the secret ending the IPN string; fuspay: the partner secret key.")
@click.option("--public-key", help="fuspay: the partner public key (signing key public+secret).")
@click.option(
    "--recipe",
    type=click.Choice(["hmac-sha512", "sha512-append", "sha512-prepend"]),
    default="hmac-sha512",
    show_default=True,
    help="fuspay: how the event is signed (FUSPAY_SIGNATURE_RECIPE).",
)
@click.option("--fiat-amount", help="alixpay: the order's fiatAmount (signed); fuspay: optional.")
@click.option("--type", "order_type", default="sell", show_default=True, help="alixpay: the order type.")
@click.option("--external-id", help="changelly: the externalOrderId field (unsigned).")
@json_option
def simulate(
    provider: str,
    order_id: str,
    status: str,
    url: str,
    key: Path | None,
    secret: str | None,
    public_key: str | None,
    recipe: str,
    fiat_amount: str | None,
    order_type: str,
    external_id: str | None,
    as_json: bool,
) -> None:
    """Post a callback for order ID with the provider's STATUS, signed as PROVIDER signs.

    ID is the id the provider's callback names: our externalOrderId for AliX and
    Fuspay (partner_order_id), Changelly's own orderId for Changelly."""
    import requests

    body, headers = signed_callback(
        provider,
        order_id,
        status,
        key=key,
        secret=secret,
        public_key=public_key,
        recipe=recipe,
        fiat_amount=fiat_amount,
        order_type=order_type,
        external_id=external_id,
    )
    try:
        answer = requests.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=TIMEOUT,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise Failure(f"could not post to {url}: {type(exc).__name__}") from exc
    text = answer.text.strip()[:500]
    if as_json:
        try:
            reply: Any = answer.json()
        except ValueError:
            reply = text
        emit_json({"url": url, "status": answer.status_code, "response": reply})
    else:
        click.echo(f"POST {url} -> {answer.status_code} {text}")
    if not answer.ok:
        click.get_current_context().exit(1)
