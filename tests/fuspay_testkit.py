"""Shared helpers of the Fuspay tests: keys, settings, fixtures signed at test time, a
recording callback receiver. Nothing here talks to anything but 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from recorders import CallbackRecorder

from config import Named, PollPolicy
from devkit.fuspay.sandbox import FuspaySandbox
from orders.providers.fuspay import signing
from orders.providers.fuspay.settings import FuspaySettings
from orders.providers.jsformat import js_stringify

PARTNER = "p176517"
PUBLIC = "pk_partner_test_0001"
SECRET = "sk_partner_test_0001"
PUBLIC_OLD = "pk_partner_test_0000"
SECRET_OLD = "sk_partner_test_0000"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fuspay"
CURRENT = "FUSPAY_PUBLIC_KEY+FUSPAY_SECRET_KEY"


def settings_for(
    base_url: str = "http://127.0.0.1:9",
    *,
    recipe: str = "hmac-sha512",
    key_mode: str = "public+secret",
    public_keys: tuple[Named[str], ...] | None = None,
    secret_keys: tuple[Named[str], ...] | None = None,
    callback_url: str | None = "http://127.0.0.1:9/webhooks/fuspay",
    timeout: float = 3.0,
) -> FuspaySettings:
    return FuspaySettings(
        partner_id=PARTNER,
        public_keys=public_keys or (Named("FUSPAY_PUBLIC_KEY", PUBLIC),),
        secret_keys=secret_keys or (Named("FUSPAY_SECRET_KEY", SECRET),),
        base_url=base_url,
        signature_recipe=recipe,
        signature_key=key_mode,
        callback_url=callback_url,
        poll=PollPolicy(backoff=(1, 2, 5), horizon=3600),
        timeout=timeout,
    )


def fixture(stem: str) -> dict[str, Any]:
    """A fixture body (no signature), key order as in the file."""
    return json.loads((FIXTURES / f"{stem}.json").read_text(encoding="utf-8"))


def fixture_stems() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def with_signature(body: Mapping[str, Any], signature: str) -> dict[str, Any]:
    """``body`` with ``signature`` where Fuspay's samples put it: after transactional_kyc."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key == "signature":
            continue
        out[key] = value
        if key == "transactional_kyc":
            out["signature"] = signature
    out.setdefault("signature", signature)
    return out


def signed(
    body: Mapping[str, Any], key: str = PUBLIC + SECRET, recipe: str = "hmac-sha512"
) -> dict[str, Any]:
    return with_signature(body, signing.sign(signing.unsigned(body), key, recipe))


def wire(body: Mapping[str, Any]) -> bytes:
    """What Node sends: ``JSON.stringify(body)``."""
    return js_stringify(dict(body)).encode("utf-8")


class Receiver(CallbackRecorder):
    """Records the events the sandbox posts (rampwatch's stand-in)."""

    path = "/webhooks/fuspay"

    def events(self, order_id: str | None = None) -> list[str]:
        return [
            b["event_name"] for b in self.bodies() if order_id is None or b["partner_order_id"] == order_id
        ]


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture(name="make_sandbox")
def make_sandbox_fixture() -> Iterator[Callable[..., FuspaySandbox]]:
    """Start sandboxes with the test keys (and any other constructor arguments); stops them after."""
    started: list[FuspaySandbox] = []

    def make(**kw: Any) -> FuspaySandbox:
        sandbox = FuspaySandbox(partner_id=PARTNER, public_key=PUBLIC, secret_key=SECRET, **kw)
        started.append(sandbox.start())
        return sandbox

    yield make
    for sandbox in started:
        sandbox.stop()
