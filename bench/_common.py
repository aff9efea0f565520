"""Shared set-up for the benchmarks: keys, a private Redis, a migrated database."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric import rsa

from config import Named, PollPolicy
from orders.migrate import upgrade
from orders.providers.alixpay.settings import AlixPaySettings

SECRET = "bench-secret"
WEBHOOK_SECRET = "bench-webhook-secret"


def keypair() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def alix(alix_key: rsa.RSAPrivateKey, partner_key: rsa.RSAPrivateKey, base_url: str) -> AlixPaySettings:
    return AlixPaySettings(
        partner_code="bench",
        secret_keys=(Named("ALIXPAY_SECRET_KEY", SECRET),),
        webhook_secret_keys=(Named("ALIXPAY_WEBHOOK_SECRET_KEY", WEBHOOK_SECRET),),
        private_key=Named("ALIXPAY_PRIVATE_KEY", partner_key),
        public_keys=(Named("ALIXPAY_PUBLIC_KEY", alix_key.public_key()),),
        base_url=base_url,
        poll=PollPolicy(),
    )


BENCH_SCHEMA = "rampwatch_bench"


def database(kind: str) -> str:
    if kind == "postgres":
        base = os.environ["RAMPWATCH_TEST_POSTGRES_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
        from sqlalchemy import create_engine, text

        # A schema of the benchmarks' own, made anew: whatever tables an earlier version
        # left, and nothing outside it is touched.
        engine = create_engine(base)
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {BENCH_SCHEMA} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {BENCH_SCHEMA}"))
        engine.dispose()
        url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{BENCH_SCHEMA}"
    else:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='rampwatch-bench-')}/bench.sqlite3"
    upgrade(url)
    return url


def databases() -> list[str]:
    return ["sqlite"] + (["postgres"] if os.environ.get("RAMPWATCH_TEST_POSTGRES_URL") else [])


def emit(**fields: object) -> None:
    print(json.dumps(fields, sort_keys=True), flush=True)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
