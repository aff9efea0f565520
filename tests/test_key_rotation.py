"""Key rotation end to end, for every provider: through the real receiver (over HTTP)
and a real worker, a callback signed with the current key and one signed with the
``_PREVIOUS`` key are both accepted and applied, and each stored event says which
setting verified it (``EventRecord.verified_by``); one signed with a key that has
been rotated out is refused (401) and never stored.

The current key's callbacks are the sandboxes' own (they sign as the providers
do); the previous and retired keys' are signed here with the same signing code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
import requests
from conftest import (
    E2E_TOKEN,
    FUSPAY_SECRET,
    WEBHOOK_SECRET,
    KeyPair,
    Keys,
    alix_settings,
    changelly_settings,
    fuspay_settings,
    make_keypair,
    serve_receiver,
)
from redis import Redis
from sqlalchemy import select

from config import Named, Settings
from devkit.alixpay.sandbox import AlixSandbox
from devkit.changelly.sandbox import ChangellySandbox
from devkit.fuspay.sandbox import FuspaySandbox
from orders.models import EventRecord
from orders.providers.alixpay import signing as alix_signing
from orders.providers.changelly import signing as changelly_signing
from orders.providers.fuspay import signing as fuspay_signing
from receiver import create_app
from workers.services import Services, build_services
from workers.worker import make_worker

WEBHOOK_SECRET_PREVIOUS = "whsec-partner-0000"
FUSPAY_PUBLIC_PREVIOUS = "pk_partner_test_0000"
FUSPAY_SECRET_PREVIOUS = "sk_partner_test_0000"


@pytest.fixture(scope="module")
def retired() -> KeyPair:
    """A key that was rotated out: configured nowhere any more."""
    return make_keypair()


@dataclass
class Rotating:
    runtime: Services
    base: str
    alix: AlixSandbox
    changelly: ChangellySandbox
    fuspay: FuspaySandbox

    def post(self, provider: str, body: bytes, headers: dict[str, str] | None = None) -> requests.Response:
        return requests.post(
            f"{self.base}/webhooks/{provider}",
            data=body,
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=10,
        )

    def drain(self) -> None:
        make_worker(self.runtime).work(burst=True, with_scheduler=True)

    def verified_by(self, provider: str) -> set[str]:
        with self.runtime.store.sessions() as session:
            rows = session.scalars(
                select(EventRecord.verified_by).where(
                    EventRecord.provider == provider, EventRecord.source == "callback"
                )
            )
            return set(rows)


@pytest.fixture
def rotating(
    database_url: str,
    redis: Redis,
    keys: Keys,
    sandbox: AlixSandbox,
    changelly_sandbox: ChangellySandbox,
    fuspay_sandbox: FuspaySandbox,
) -> Iterator[Rotating]:
    """The receiver on a loopback port and a worker's Services, every provider
    configured with a current and a ``_PREVIOUS`` key."""
    fuspay = fuspay_settings(fuspay_sandbox.url)
    port = redis.connection_pool.connection_kwargs["port"]
    settings = Settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        api_token=E2E_TOKEN,
        providers={
            "alixpay": alix_settings(
                keys,
                sandbox.url,
                public_keys=(
                    Named("ALIXPAY_PUBLIC_KEY", keys.alix.public),
                    Named("ALIXPAY_PUBLIC_KEY_PREVIOUS", keys.alix_old.public),
                ),
                webhook_secret_keys=(
                    Named("ALIXPAY_WEBHOOK_SECRET_KEY", WEBHOOK_SECRET),
                    Named("ALIXPAY_WEBHOOK_SECRET_KEY_PREVIOUS", WEBHOOK_SECRET_PREVIOUS),
                ),
            ),
            "changelly": replace(
                changelly_settings(keys, changelly_sandbox.url),
                callback_public_keys=(
                    Named("CHANGELLY_CALLBACK_PUBLIC_KEY", keys.changelly_callback.public),
                    Named("CHANGELLY_CALLBACK_PUBLIC_KEY_PREVIOUS", keys.alix_old.public),
                ),
            ),
            "fuspay": replace(
                fuspay,
                public_keys=(
                    *fuspay.public_keys,
                    Named("FUSPAY_PUBLIC_KEY_PREVIOUS", FUSPAY_PUBLIC_PREVIOUS),
                ),
                secret_keys=(
                    *fuspay.secret_keys,
                    Named("FUSPAY_SECRET_KEY_PREVIOUS", FUSPAY_SECRET_PREVIOUS),
                ),
            ),
        },
    )
    runtime = build_services(settings, redis=redis)
    token = runtime.install()
    app = create_app(settings, redis=redis, store=runtime.store, adapters=runtime.adapters)
    server = serve_receiver(app, sandbox, changelly_sandbox, fuspay_sandbox)
    base = server.base
    try:
        yield Rotating(runtime, base, sandbox, changelly_sandbox, fuspay_sandbox)
    finally:
        server.close()
        token.var.reset(token)
        runtime.store.engine.dispose()


def test_alixpay_rotation(rotating: Rotating, keys: Keys, retired: KeyPair) -> None:
    rotating.alix.create_order("rot-alix", 250000)
    rotating.alix.advance("rot-alix", "PAYMENT_COMPLETED")  # the sandbox signs: the current key

    def signed(status: str, key: KeyPair, secret: str) -> bytes:
        body = {**rotating.alix.order("rot-alix"), "status": status}
        body.pop("signature", None)
        body["signature"] = alix_signing.sign(alix_signing.response_fields(body), secret, key.private)
        return json.dumps(body).encode()

    assert (
        rotating.post(
            "alixpay", signed("PROCESSING_TOKEN_TRANSFER", keys.alix_old, WEBHOOK_SECRET_PREVIOUS)
        ).status_code
        == 200
    )
    refused = rotating.post("alixpay", signed("SUCCESS", retired, WEBHOOK_SECRET))
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_signature"
    rotating.drain()
    assert rotating.verified_by("alixpay") == {
        "ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY",
        "ALIXPAY_PUBLIC_KEY_PREVIOUS+ALIXPAY_WEBHOOK_SECRET_KEY_PREVIOUS",
    }
    view = requests.get(
        f"{rotating.base}/api/orders/alixpay/rot-alix",
        headers={"Authorization": f"Bearer {E2E_TOKEN}"},
        timeout=10,
    ).json()
    assert view["provider_status"] == "PROCESSING_TOKEN_TRANSFER"  # never the retired key's SUCCESS


def test_fuspay_rotation(rotating: Rotating) -> None:
    rotating.fuspay.create_order("rot-fus")  # its init event, signed by the sandbox: the current keys

    def signed(event_name: str, key: str) -> bytes:
        body = fuspay_signing.unsigned(rotating.fuspay.signed_event("rot-fus"))
        body["event_name"] = event_name
        body["signature"] = fuspay_signing.sign(body, key, "hmac-sha512")
        return json.dumps(body).encode()

    previous = signed("event.sell.received.crypto", FUSPAY_PUBLIC_PREVIOUS + FUSPAY_SECRET_PREVIOUS)
    assert rotating.post("fuspay", previous).status_code == 200
    refused = rotating.post("fuspay", signed("event.sell.error", "pk_retired" + "sk_retired"))
    assert refused.status_code == 401
    # Half a rotation (the previous public key with the current secret) is still a valid pair.
    mixed = signed("event.sell.received.fiat_kyc_error", FUSPAY_PUBLIC_PREVIOUS + FUSPAY_SECRET)
    assert rotating.post("fuspay", mixed).status_code == 200
    rotating.drain()
    assert rotating.verified_by("fuspay") == {
        "FUSPAY_PUBLIC_KEY+FUSPAY_SECRET_KEY",
        "FUSPAY_PUBLIC_KEY_PREVIOUS+FUSPAY_SECRET_KEY_PREVIOUS",
        "FUSPAY_PUBLIC_KEY_PREVIOUS+FUSPAY_SECRET_KEY",
    }


def test_changelly_rotation(rotating: Rotating, keys: Keys, retired: KeyPair) -> None:
    order = rotating.changelly.create_order("rot-chg")
    rotating.changelly.advance("rot-chg", "pending")  # the sandbox signs: the current key

    def post_signed_by(key: KeyPair) -> requests.Response:
        body = json.dumps({**rotating.changelly.order("rot-chg"), "status": "hold"}).encode()
        signature = changelly_signing.sign_callback(order["orderId"], key.private)
        return rotating.post("changelly", body, {changelly_signing.CALLBACK_SIGNATURE_HEADER: signature})

    assert post_signed_by(keys.alix_old).status_code == 200  # Changelly's previous callback key
    refused = post_signed_by(retired)
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_signature"
    rotating.drain()
    assert rotating.verified_by("changelly") == {
        "CHANGELLY_CALLBACK_PUBLIC_KEY",
        "CHANGELLY_CALLBACK_PUBLIC_KEY_PREVIOUS",
    }
