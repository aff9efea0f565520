"""Throughput of POST /webhooks/alixpay: RSA verification, parsing and enqueueing on a
real (private) Redis, through the WSGI app in-process (no network server in the way).
Prints one JSON line: accepted callbacks per second and latency percentiles."""

from __future__ import annotations

import json
import time

from _common import WEBHOOK_SECRET, alix, database, emit, keypair

from config import Settings
from orders.providers.alixpay import signing
from receiver import create_app
from workers.localredis import PrivateRedis

N = 2000


def main() -> None:
    alix_key, partner_key = keypair(), keypair()
    bodies = []
    for i in range(N):
        body = {"externalOrderId": f"r-{i}", "type": "sell", "fiatAmount": 100000 + i, "status": "SUCCESS"}
        body["signature"] = signing.sign(signing.response_fields(body), WEBHOOK_SECRET, alix_key)
        bodies.append(json.dumps(body).encode())
    with PrivateRedis() as redis_server:
        settings = Settings(
            database_url=database("sqlite"),
            redis_url=redis_server.url,
            alixpay=alix(alix_key, partner_key, "http://127.0.0.1:9"),
        )
        client = create_app(settings).test_client()
        latencies = []
        start = time.perf_counter()
        for body in bodies:
            t0 = time.perf_counter()
            resp = client.post("/webhooks/alixpay", data=body, content_type="application/json")
            latencies.append(time.perf_counter() - t0)
            assert resp.status_code == 200, resp.get_json()
        total = time.perf_counter() - start
    latencies.sort()
    emit(
        bench="receiver",
        callbacks=N,
        seconds=round(total, 3),
        callbacks_per_second=round(N / total, 1),
        p50_ms=round(latencies[N // 2] * 1000, 3),
        p99_ms=round(latencies[int(N * 0.99)] * 1000, 3),
    )


if __name__ == "__main__":
    main()
