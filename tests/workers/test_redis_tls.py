"""``rediss://`` against a real TLS Redis with a self-signed certificate, as hosted
Redis add-ons hand out: verification is on by default and refuses it with a message
naming ``REDIS_TLS_VERIFY``; ``REDIS_TLS_VERIFY=none`` connects.

The server is a private ``redis-server`` listening on TLS only, with a certificate
made here; the worker, the clock and gunicorn run as real processes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.exceptions import ConnectionError as RedisConnectionError

from config import Settings
from devkit.localredis import find_server, free_port
from orders.db import make_engine
from orders.migrate import upgrade
from orders.providers import STATUS_MAPS, load_settings
from orders.store import Store
from receiver import create_app
from receiver.wsgi import app_from_env
from workers.queue import RedisTLSVerifyFailed, check_tls_at_start, connect, tls_verify_failure

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "tls-test-password-0001"  # hosted Redis URLs carry one: it must never be printed
REFUSAL = (
    "rampwatch: Redis TLS certificate verification failed for REDIS_URL (self-signed certificate); "
    "hosted Redis with a self-signed certificate needs REDIS_TLS_VERIFY=none"
)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by its own key (no CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rampwatch-test-redis")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        # The names match, so the only thing verification can object to is the signer.
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "redis.crt", directory / "redis.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


@dataclass(frozen=True)
class TLSRedis:
    port: int

    @property
    def url(self) -> str:
        return f"rediss://:{PASSWORD}@127.0.0.1:{self.port}/0"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSRedis]:
    directory = tmp_path_factory.mktemp("tls-redis")
    cert_file, key_file = self_signed(directory)
    port = free_port()
    args = [
        find_server(),
        "--port", "0",  # TLS only, as hosted Redis
        "--tls-port", str(port),
        "--tls-cert-file", str(cert_file),
        "--tls-key-file", str(key_file),
        "--tls-ca-cert-file", str(cert_file),
        "--tls-auth-clients", "no",
        "--bind", "127.0.0.1",
        "--requirepass", PASSWORD,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    probe = connect(TLSRedis(port).url, tls_verify="none", timeout=0.5)
    deadline = time.monotonic() + 10
    try:
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                if "tls" in out.lower() and ("not" in out.lower() or "bad directive" in out.lower()):
                    pytest.skip(f"{args[0]} was built without TLS support: {out.strip()[-200:]}")
                raise RuntimeError(f"{args[0]} exited at start: {out.strip()[-500:]}")
            try:
                if probe.ping():
                    break
            except RedisConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield TLSRedis(port)
    finally:
        probe.close()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'tls.sqlite3'}"
    upgrade(url)
    return url


def env_for(tls_redis: TLSRedis, sqlite_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TMPDIR")}
    # gunicorn keeps a control socket under HOME: keep it beside the test's database.
    home = sqlite_url.removeprefix("sqlite:///").rsplit("/", 1)[0]
    return {**env, "HOME": home, "DATABASE_URL": sqlite_url, "REDIS_URL": tls_redis.url, **extra}


def rampwatch(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------- the client


def test_verification_is_on_by_default_and_names_the_setting(tls_redis: TLSRedis) -> None:
    assert load_settings({"REDIS_URL": tls_redis.url}).redis_tls_verify == "required"
    client = connect(tls_redis.url)
    try:
        with pytest.raises(RedisTLSVerifyFailed) as info:
            check_tls_at_start(client)
    finally:
        client.close()
    assert f"rampwatch: {info.value}" == REFUSAL
    assert PASSWORD not in str(info.value)


def test_none_accepts_the_self_signed_certificate(tls_redis: TLSRedis) -> None:
    client = connect(tls_redis.url, tls_verify="none")
    try:
        check_tls_at_start(client)  # raises nothing
        client.set("rampwatch:tls-probe", "1", ex=10)
        assert client.get("rampwatch:tls-probe") == b"1"
    finally:
        client.close()


def test_an_unreachable_redis_is_not_a_tls_failure() -> None:
    dead = connect(f"rediss://127.0.0.1:{free_port()}/0")
    try:
        check_tls_at_start(dead)  # the caller's retry policy applies, not a refusal
        with pytest.raises(RedisConnectionError) as info:
            dead.ping()
    finally:
        dead.close()
    assert tls_verify_failure(info.value) is None


def test_plain_redis_urls_take_no_tls_arguments(redis_server) -> None:
    client = connect(redis_server.url, tls_verify="none")  # ignored for redis://
    try:
        assert client.ping()
    finally:
        client.close()


# --------------------------------------------------------------------------- start-up of each process


@pytest.mark.parametrize("command", [["worker", "--burst"], ["clock"]])
def test_worker_and_clock_refuse_with_one_line_naming_the_setting(
    tls_redis: TLSRedis, sqlite_url: str, command: list[str]
) -> None:
    done = rampwatch(*command, env=env_for(tls_redis, sqlite_url))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == REFUSAL
    assert "Traceback" not in done.stdout + done.stderr


def test_worker_runs_with_verification_off(tls_redis: TLSRedis, sqlite_url: str) -> None:
    done = rampwatch("worker", "--burst", env=env_for(tls_redis, sqlite_url, REDIS_TLS_VERIFY="none"))
    assert done.returncode == 0, done.stderr
    assert "REDIS_TLS_VERIFY" not in done.stderr


def test_clock_runs_with_verification_off(tls_redis: TLSRedis, sqlite_url: str) -> None:
    env = env_for(tls_redis, sqlite_url, REDIS_TLS_VERIFY="none", RAMPWATCH_SWEEP_INTERVAL="0.2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "clock"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = connect(tls_redis.url, tls_verify="none")
    try:
        deadline = time.monotonic() + 20
        while not client.exists("rq:job:sweep") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.exists("rq:job:sweep"), "the clock queued no sweep over TLS"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        client.flushdb()
        client.close()


def test_web_app_from_env_refuses_naming_the_setting(
    tls_redis: TLSRedis, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("REDIS_URL", tls_redis.url)
    monkeypatch.delenv("REDIS_TLS_VERIFY", raising=False)
    with pytest.raises(RedisTLSVerifyFailed) as info:
        app_from_env()
    assert "REDIS_TLS_VERIFY=none" in str(info.value)
    monkeypatch.setenv("REDIS_TLS_VERIFY", "none")
    app = app_from_env()
    try:
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 200, ready.get_json()
        assert ready.get_json()["checks"]["redis"] == "ok"
    finally:
        app.extensions["rampwatch"].store.engine.dispose()
        app.extensions["rampwatch"].redis.close()


def test_gunicorn_does_not_boot_and_says_why(tls_redis: TLSRedis, sqlite_url: str) -> None:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    done = subprocess.run(
        [
            str(gunicorn),
            "--bind",
            f"127.0.0.1:{free_port()}",
            "--workers",
            "1",
            "receiver.wsgi:app_from_env()",
        ],
        cwd=ROOT,
        env=env_for(tls_redis, sqlite_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert REFUSAL.removeprefix("rampwatch: ") in done.stderr


def test_readyz_names_the_setting(tls_redis: TLSRedis, sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, redis_url=tls_redis.url)
    store = Store(make_engine(sqlite_url), STATUS_MAPS, {})
    app = create_app(settings, store=store, adapters={})
    try:
        ready = app.test_client().get("/readyz")
    finally:
        store.engine.dispose()
        app.extensions["rampwatch"].redis.close()
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["redis"] == REFUSAL.removeprefix("rampwatch: ")
    assert ready.get_json()["checks"]["database"] == "ok"
