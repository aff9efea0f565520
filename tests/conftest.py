"""Shared fixtures: a private Redis (never one we did not start), databases, keys.

* ``redis_server``: one private server for the session (for each test process, under
  ``make test``'s ``-n 2``), found the way ``make run`` finds one (``devkit.localredis``); ``redis`` is a client on it, flushed after
  each test.
* ``database_url``: a migrated SQLite file per test, and, when
  ``RAMPWATCH_TEST_POSTGRES_URL`` is set, the same tests again on PostgreSQL in
  a schema of their own (dropped afterwards). The migrations run once per session
  and database (``migrated_sqlite``, ``migrated_postgres``); each test gets a copy
  of the migrated file, or the migrations' statements run again in its schema:
  Alembic's own run cost 0.05 s (SQLite) and 0.22 s (PostgreSQL) a test.
* ``keys``: RSA key pairs made once per session (AliX's and ours).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from recorders import WsgiLoopback
from redis import Redis
from sqlalchemy import create_engine, event, text

from config import Named, PollPolicy, Settings
from devkit.alixpay.sandbox import AlixSandbox
from devkit.changelly.sandbox import ChangellySandbox
from devkit.fuspay.sandbox import FuspaySandbox
from devkit.localredis import PrivateRedis
from orders.db import make_engine
from orders.events import Event
from orders.migrate import upgrade
from orders.providers import build_adapters
from orders.providers.alixpay.settings import AlixPaySettings
from orders.providers.changelly.settings import ChangellySettings
from orders.providers.fuspay.settings import FuspaySettings
from receiver import create_app
from workers.services import Services, build_services
from workers.stream import STREAM
from workers.worker import make_worker

POSTGRES_URL = os.environ.get("RAMPWATCH_TEST_POSTGRES_URL")
DB_PARAMS = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])


def queued_callbacks(redis: Redis) -> list[Event]:
    """The callbacks waiting on the callback stream (``workers.stream``), oldest first."""
    return [Event.from_dict(json.loads(fields[b"e"])) for _, fields in redis.xrange(STREAM)]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: PrivateRedis) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url, socket_timeout=10)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _pg_url(schema: str) -> str:
    assert POSTGRES_URL
    base = POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1).replace(
        "postgres://", "postgresql+psycopg://", 1
    )
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the newest revision, for tests to copy."""
    path = tmp_path_factory.mktemp("migrated") / "rampwatch.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection closed: the WAL is checkpointed into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(scope="session")
def migrated_postgres() -> list[tuple[str, Any]]:
    """The statements the migrations send to a new PostgreSQL schema (all but reads),
    recorded once, for each test's schema to run again. Unqualified, they land in the
    schema of the connection's search path."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(_pg_url("public"))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(_pg_url(schema))
    sent: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        assert not many, statement  # no migration sends one statement for many rows
        if not statement.lstrip().upper().startswith(("SELECT", "SHOW")):
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    assert any("alembic_version" in statement for statement, _ in sent)
    return sent


@pytest.fixture(params=DB_PARAMS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database (SQLite file, or a private PostgreSQL schema)."""
    if request.param == "sqlite":
        path = tmp_path / "rampwatch.sqlite3"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        yield f"sqlite:///{path}"
        return
    migration: list[tuple[str, Any]] = request.getfixturevalue("migrated_postgres")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(_pg_url("public"))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = _pg_url(schema)
    try:
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                for statement, parameters in migration:
                    conn.exec_driver_sql(statement, parameters)
        finally:
            engine.dispose()
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@dataclass(frozen=True)
class KeyPair:
    private: RSAPrivateKey
    public: RSAPublicKey

    @property
    def private_pem(self) -> str:
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    @property
    def public_pem(self) -> str:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


def make_keypair() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyPair(key, key.public_key())


@dataclass(frozen=True)
class Keys:
    alix: KeyPair  # AliX's: signs IPNs and answers
    alix_old: KeyPair  # AliX's previous key, for rotation tests
    partner: KeyPair  # ours: signs requests
    changelly_callback: KeyPair  # Changelly's callback key


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        alix=make_keypair(),
        alix_old=make_keypair(),
        partner=make_keypair(),
        changelly_callback=make_keypair(),
    )


SECRET = "sk-partner-secret-0001"
WEBHOOK_SECRET = "whsec-partner-0001"
PARTNER_CODE = "rampwatch-test"


def alix_settings(keys: Keys, base_url: str, *, timeout: float = 5.0, **overrides: object) -> AlixPaySettings:
    values: dict[str, object] = dict(
        partner_code=PARTNER_CODE,
        secret_keys=(Named("ALIXPAY_SECRET_KEY", SECRET),),
        webhook_secret_keys=(Named("ALIXPAY_WEBHOOK_SECRET_KEY", WEBHOOK_SECRET),),
        private_key=Named("ALIXPAY_PRIVATE_KEY", keys.partner.private),
        public_keys=(Named("ALIXPAY_PUBLIC_KEY", keys.alix.public),),
        base_url=base_url,
        poll=PollPolicy(backoff=(1, 2, 5), horizon=3600),
        timeout=timeout,
    )
    values.update(overrides)
    return AlixPaySettings(**values)  # type: ignore[arg-type]


def alix_env(keys: Keys, base_url: str) -> dict[str, str]:
    """The same AliX settings as environment variables (PEM text)."""
    return {
        "ALIXPAY_PARTNER_CODE": PARTNER_CODE,
        "ALIXPAY_SECRET_KEY": SECRET,
        "ALIXPAY_WEBHOOK_SECRET_KEY": WEBHOOK_SECRET,
        "ALIXPAY_PRIVATE_KEY": keys.partner.private_pem,
        "ALIXPAY_PUBLIC_KEY": keys.alix.public_pem,
        "ALIXPAY_BASE_URL": base_url,
    }


def alix_sandbox(keys: Keys, kind: type[AlixSandbox] = AlixSandbox) -> AlixSandbox:
    """An AliX sandbox (or a subclass of it), signing with ``keys.alix`` and verifying our
    ``keys.partner``; enter it to serve."""
    return kind(
        partner_code=PARTNER_CODE,
        secret_key=SECRET,
        webhook_secret_key=WEBHOOK_SECRET,
        partner_public_key=keys.partner.public,
        alix_private_key=keys.alix.private,
    )


@pytest.fixture
def sandbox(keys: Keys) -> Iterator[AlixSandbox]:
    """The AliX sandbox, signing with ``keys.alix`` and verifying our ``keys.partner``."""
    with alix_sandbox(keys) as sb:
        yield sb


CHANGELLY_API_KEY = "changelly-api-key-test"


def changelly_settings(keys: Keys, base_url: str, *, timeout: float = 5.0) -> ChangellySettings:
    return ChangellySettings(
        api_key=CHANGELLY_API_KEY,
        private_key=Named("CHANGELLY_PRIVATE_KEY", keys.partner.private),
        callback_public_keys=(Named("CHANGELLY_CALLBACK_PUBLIC_KEY", keys.changelly_callback.public),),
        base_url=base_url,
        poll=PollPolicy(backoff=(1, 2, 5), horizon=3600),
        timeout=timeout,
        callback_poll_window=1,
    )


def changelly_env(keys: Keys, base_url: str) -> dict[str, str]:
    return {
        "CHANGELLY_API_KEY": CHANGELLY_API_KEY,
        "CHANGELLY_PRIVATE_KEY": keys.partner.private_pem,
        "CHANGELLY_CALLBACK_PUBLIC_KEY": keys.changelly_callback.public_pem,
        "CHANGELLY_BASE_URL": base_url,
        "CHANGELLY_CALLBACK_POLL_WINDOW": "1",
    }


@pytest.fixture
def changelly_sandbox(keys: Keys) -> Iterator[ChangellySandbox]:
    """The Changelly sandbox, verifying our ``keys.partner`` and signing callbacks
    with ``keys.changelly_callback``."""
    with ChangellySandbox(
        api_key=CHANGELLY_API_KEY,
        partner_public_key=keys.partner.public,
        callback_private_key=keys.changelly_callback.private,
    ) as sb:
        yield sb


FUSPAY_PARTNER_ID = "p176517"
FUSPAY_PUBLIC = "pk_partner_test_0001"
FUSPAY_SECRET = "sk_partner_test_0001"


def fuspay_settings(
    base_url: str, *, timeout: float = 5.0, callback_url: str | None = None
) -> FuspaySettings:
    return FuspaySettings(
        partner_id=FUSPAY_PARTNER_ID,
        public_keys=(Named("FUSPAY_PUBLIC_KEY", FUSPAY_PUBLIC),),
        secret_keys=(Named("FUSPAY_SECRET_KEY", FUSPAY_SECRET),),
        base_url=base_url,
        callback_url=callback_url,
        poll=PollPolicy(backoff=(1, 2, 5), horizon=3600),
        timeout=timeout,
    )


def fuspay_env(base_url: str) -> dict[str, str]:
    return {
        "FUSPAY_PARTNER_ID": FUSPAY_PARTNER_ID,
        "FUSPAY_PUBLIC_KEY": FUSPAY_PUBLIC,
        "FUSPAY_SECRET_KEY": FUSPAY_SECRET,
        "FUSPAY_BASE_URL": base_url,
    }


@pytest.fixture
def fuspay_sandbox() -> Iterator[FuspaySandbox]:
    """The Fuspay sandbox, signing events with HMAC-SHA512 over public+secret."""
    with FuspaySandbox(
        partner_id=FUSPAY_PARTNER_ID, public_key=FUSPAY_PUBLIC, secret_key=FUSPAY_SECRET
    ) as sb:
        yield sb


E2E_TOKEN = "e2e-token-0123456789abcdef"


def token_settings(
    database_url: str, redis: Redis, keys: Keys, sandbox_url: str, tokens: tuple[str, str], **overrides: Any
) -> Settings:
    """Settings for the API and console tests: the private Redis, the test's database, the
    AliX sandbox at ``sandbox_url``, and the (partner, operator) ``tokens``."""
    port = redis.connection_pool.connection_kwargs["port"]
    values: dict[str, Any] = dict(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        api_token=tokens[0],
        ops_token=tokens[1],
        providers={"alixpay": alix_settings(keys, sandbox_url, timeout=2.0)},
    )
    values.update(overrides)
    return Settings(**values)


def app_on(settings: Settings, redis: Redis, store: Any, **kw: Any) -> Any:
    """The web app on these collaborators (the store the test reads), adapters from ``settings``."""
    return create_app(settings, redis=redis, store=store, adapters=build_adapters(settings), **kw)


def serve_receiver(app: Any, *sandboxes: Any) -> WsgiLoopback:
    """The receiver ``app`` on a loopback port, each sandbox posting its callbacks to it."""
    server = WsgiLoopback(app)
    for box in sandboxes:
        box.callback_url = f"{server.base}/webhooks/{box.name}"
    return server


@dataclass
class Stack:
    settings: Settings
    runtime: Services  # the workers' collaborators, installed for in-process jobs
    sandbox: AlixSandbox
    changelly: ChangellySandbox
    fuspay: FuspaySandbox
    base: str
    env: dict[str, str]
    web: Services | None = None  # the web app's own collaborators

    def api(self, method: str, path: str, **kw) -> requests.Response:
        headers = {"Authorization": f"Bearer {E2E_TOKEN}"}
        return requests.request(method, self.base + path, headers=headers, timeout=10, **kw)

    def drain(self) -> None:
        make_worker(self.runtime).work(burst=True, with_scheduler=True)


@pytest.fixture
def stack(
    database_url: str,
    redis: Redis,
    keys: Keys,
    sandbox: AlixSandbox,
    changelly_sandbox: ChangellySandbox,
    fuspay_sandbox: FuspaySandbox,
) -> Iterator[Stack]:
    """The whole service over real HTTP: the receiver on a loopback port, every
    provider's sandbox posting callbacks to it, the workers' Services for in-process workers
    (``drain``), and ``env`` for the CLI."""
    port = redis.connection_pool.connection_kwargs["port"]
    settings = Settings(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        api_token=E2E_TOKEN,
        providers={
            "alixpay": alix_settings(keys, sandbox.url),
            "changelly": changelly_settings(keys, changelly_sandbox.url),
            "fuspay": fuspay_settings(fuspay_sandbox.url),
        },
        # Flow tests post floods of forged callbacks from one address; the per-address
        # limit of refusals has its own tests (tests/receiver/test_limits.py).
        unverified_limit=10_000,
    )
    runtime = build_services(settings, redis=redis)
    token = runtime.install()
    app = create_app(settings, redis=redis, store=runtime.store, adapters=runtime.adapters)
    server = serve_receiver(app, sandbox, changelly_sandbox, fuspay_sandbox)
    base = server.base
    env = {
        **fuspay_env(fuspay_sandbox.url),
        **alix_env(keys, sandbox.url),
        **changelly_env(keys, changelly_sandbox.url),
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.redis_url,
        "RAMPWATCH_API_E2E_TOKEN": E2E_TOKEN,
        "ALIXPAY_POLL_BACKOFF": "1s,2s",
    }
    try:
        yield Stack(
            settings,
            runtime,
            sandbox,
            changelly_sandbox,
            fuspay_sandbox,
            base,
            env,
            app.extensions["rampwatch"],
        )
    finally:
        server.close()
        token.var.reset(token)
        runtime.store.engine.dispose()
