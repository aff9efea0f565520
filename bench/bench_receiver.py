"""Throughput of POST /webhooks/<provider>: verification, parsing and enqueueing on a real
(private) Redis, through the WSGI app in-process (no network server in the way). One
JSON line per provider: accepted callbacks per second and latency percentiles.
AliX verifies RSA-SHA256 over four fields, Fuspay HMAC-SHA512 over the whole body,
Changelly RSA-SHA256 over {"orderId"} from a header."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from _common import WEBHOOK_SECRET, alix, database, emit, keypair

from config import Named, Settings
from devkit.localredis import PrivateRedis
from orders.providers.alixpay import signing as alix_signing
from orders.providers.changelly import signing as changelly_signing
from orders.providers.changelly.settings import ChangellySettings
from orders.providers.fuspay import signing as fuspay_signing
from orders.providers.fuspay.settings import FuspaySettings
from receiver import create_app

N = 2000


def alix_bodies(key) -> list[tuple[bytes, dict[str, str]]]:
    out = []
    for i in range(N):
        body = {"externalOrderId": f"r-{i}", "type": "sell", "fiatAmount": 100000 + i, "status": "SUCCESS"}
        body["signature"] = alix_signing.sign(alix_signing.response_fields(body), WEBHOOK_SECRET, key)
        out.append((json.dumps(body).encode(), {}))
    return out


def fuspay_bodies() -> list[tuple[bytes, dict[str, str]]]:
    out = []
    for i in range(N):
        body = {
            "event_name": "event.sell.received.crypto",
            "partner_order_id": f"f-{i}",
            "fuspay_order_ref": f"f-{i}_p1",
            "fiat_amount_to_receive": 1000,
            "crypto_amount_to_sell": 100,
            "fiat_currency": "NGN",
            "chain": "usdt-trc20",
            "fiat_payment_status": "STARTED",
            "crypto_payment_status": "PAID",
        }
        body["signature"] = fuspay_signing.sign(body, "pk_bench" + "sk_bench", "hmac-sha512")
        out.append((json.dumps(body).encode(), {}))
    return out


def changelly_bodies(key) -> list[tuple[bytes, dict[str, str]]]:
    out = []
    for i in range(N):
        order_id = f"c-{i}"
        body = {"orderId": order_id, "status": "pending", "externalOrderId": f"x-{i}"}
        headers = {"X-Callback-Signature": changelly_signing.sign_callback(order_id, key)}
        out.append((json.dumps(body).encode(), headers))
    return out


def run(client, provider: str, requests_: list[tuple[bytes, dict[str, str]]]) -> None:
    latencies = []
    start = time.perf_counter()
    for body, headers in requests_:
        t0 = time.perf_counter()
        resp = client.post(
            f"/webhooks/{provider}", data=body, content_type="application/json", headers=headers
        )
        latencies.append(time.perf_counter() - t0)
        assert resp.status_code == 200, resp.get_json()
    total = time.perf_counter() - start
    latencies.sort()
    emit(
        bench="receiver",
        provider=provider,
        callbacks=N,
        seconds=round(total, 3),
        callbacks_per_second=round(N / total, 1),
        p50_ms=round(latencies[N // 2] * 1000, 3),
        p99_ms=round(latencies[int(N * 0.99)] * 1000, 3),
    )


def main() -> None:
    alix_key, partner_key, changelly_key = keypair(), keypair(), keypair()
    cases: list[tuple[str, Callable[[], list[tuple[bytes, dict[str, str]]]]]] = [
        ("alixpay", lambda: alix_bodies(alix_key)),
        ("fuspay", fuspay_bodies),
        ("changelly", lambda: changelly_bodies(changelly_key)),
    ]
    with PrivateRedis() as redis_server:
        settings = Settings(
            database_url=database("sqlite"),
            redis_url=redis_server.url,
            providers={
                "alixpay": alix(alix_key, partner_key, "http://127.0.0.1:9"),
                "fuspay": FuspaySettings(
                    partner_id="p1",
                    public_keys=(Named("FUSPAY_PUBLIC_KEY", "pk_bench"),),
                    secret_keys=(Named("FUSPAY_SECRET_KEY", "sk_bench"),),
                    base_url="http://127.0.0.1:9",
                ),
                "changelly": ChangellySettings(
                    api_key="bench",
                    private_key=Named("CHANGELLY_PRIVATE_KEY", partner_key),
                    callback_public_keys=(
                        Named("CHANGELLY_CALLBACK_PUBLIC_KEY", changelly_key.public_key()),
                    ),
                    base_url="http://127.0.0.1:9",
                ),
            },
        )
        client = create_app(settings).test_client()
        for provider, make in cases:
            run(client, provider, make())


if __name__ == "__main__":
    main()
