"""The service as a host runs it, for the benchmarks that need real processes: the
Procfile's ``web`` line (gunicorn with ``receiver.gunicorn_conf``) and ``rampwatch worker``
processes, their environment (as ``config/example.env`` names it), AliX keys in PEM files,
and signed AliX callbacks.

Everything listens on 127.0.0.1. Each process runs in a session of its own, with its
output in a log file of the run's folder, and is stopped by its own id (SIGTERM, then
SIGKILL to the group it leads); the kernel sends it SIGTERM if the benchmark dies first.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _common import SECRET, WEBHOOK_SECRET, keypair
from cryptography.hazmat.primitives import serialization
from redis import Redis

from devkit.localredis import _die_with_parent, free_port
from orders.events import Event, utcnow
from orders.providers.alixpay import signing
from orders.providers.alixpay.adapter import AlixPayAdapter
from receiver.gunicorn_conf import READY
from workers.liveness import alive_key

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
BIN = Path(sys.executable).parent
VERIFIED_BY = "ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY"
LIFECYCLE = ("AWAITING_PAYMENT", "PAYMENT_COMPLETED", "PROCESSING_TOKEN_TRANSFER", "SUCCESS")
# Settings of ours that must not leak in from the shell that runs the benchmarks.
SETTINGS = ("RAMPWATCH_", "ALIXPAY_", "FUSPAY_", "CHANGELLY_", "NOTIFY_", "SENTRY_")
SETTING_NAMES = ("DATABASE_URL", "REDIS_URL", "REDIS_TLS_VERIFY", "WEB_CONCURRENCY", "PORT", "HOST")

__all__ = ["LIFECYCLE", "AlixKeys", "Proc", "callback_events", "free_port", "percentile"]


def web_concurrency() -> int:
    """The Procfile's gunicorn worker count: ``$WEB_CONCURRENCY``, else 2."""
    return int(os.environ.get("WEB_CONCURRENCY") or 2)


def log_level() -> str:
    """The services' log level: INFO (the default a host runs) unless BENCH_LOG_LEVEL."""
    return os.environ.get("BENCH_LOG_LEVEL", "INFO")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


class Deadline:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.left() <= 0


def wait_until(check: Callable[[], bool], deadline: Deadline, interval: float = 0.2) -> bool:
    while True:
        if check():
            return True
        if deadline.passed:
            return False
        time.sleep(interval)


# ---------------------------------------------------------------------- keys and callbacks


class AlixKeys:
    """AliX's key pair (it signs callbacks) and ours, the public and private halves the
    service reads written to PEM files in ``folder``."""

    def __init__(self, folder: Path):
        self.alix = keypair()
        self.partner = keypair()
        self.alix_pem = self.alix.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.public_path = folder / "alixpay_public.pem"
        self.private_path = folder / "alixpay_partner_private.pem"
        self.public_path.write_bytes(
            self.alix.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.private_path.write_bytes(
            self.partner.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def env(self) -> dict[str, str]:
        return {
            "ALIXPAY_PARTNER_CODE": "bench",
            "ALIXPAY_SECRET_KEY": SECRET,
            "ALIXPAY_WEBHOOK_SECRET_KEY": WEBHOOK_SECRET,
            "ALIXPAY_PRIVATE_KEY": str(self.private_path),
            "ALIXPAY_PUBLIC_KEY": str(self.public_path),
            "ALIXPAY_BASE_URL": "http://127.0.0.1:9",  # nothing listens: no poll is expected
        }

    def sign(self, callbacks: Sequence[tuple[str, str, int]]) -> list[bytes]:
        """Signed IPN bodies for ``(externalOrderId, status, fiatAmount)``, as AliX sends them;
        signed in two processes (RSA signing is the slow part of setting up a run)."""
        chunks = [list(callbacks[i : i + 500]) for i in range(0, len(callbacks), 500)]
        with ProcessPoolExecutor(2, initializer=_load_signer, initargs=(self.alix_pem,)) as pool:
            return [body for part in pool.map(_sign_chunk, chunks) for body in part]


_signer = None


def _load_signer(pem: bytes) -> None:
    global _signer
    _signer = serialization.load_pem_private_key(pem, password=None)


def _sign_chunk(callbacks: list[tuple[str, str, int]]) -> list[bytes]:
    out = []
    for order_id, status, amount in callbacks:
        body: dict[str, object] = {
            "externalOrderId": order_id,
            "type": "sell",
            "fiatAmount": amount,
            "status": status,
        }
        body["signature"] = signing.sign(signing.response_fields(body), WEBHOOK_SECRET, _signer)
        out.append(json.dumps(body).encode())
    return out


def callback_events(prefix: str, count: int) -> list[Event]:
    """``count`` distinct AliX callbacks as the receiver makes them (the adapter's
    ``event_from_order``, which ``parse_callback`` calls once the signature verified;
    covers, identity and dedup key included): ``count / 4`` orders through the four
    statuses of ``LIFECYCLE``, one round of statuses after the other. The signature in
    the raw body is random bytes: the workers do not verify again."""
    orders = count // len(LIFECYCLE)
    received = utcnow()
    signature = base64.b64encode(os.urandom(256)).decode()
    out = []
    for status in LIFECYCLE:
        for i in range(orders):
            body = {
                "externalOrderId": f"{prefix}-{i}",
                "type": "sell",
                "fiatAmount": 100000 + i,
                "status": status,
                "signature": signature,
            }
            out.append(
                AlixPayAdapter.event_from_order(body, json.dumps(body), VERIFIED_BY, "callback", received)
            )
    return out


# ---------------------------------------------------------------------- processes


def service_env(database_url: str, redis_url: str, keys: AlixKeys, **extra: str) -> dict[str, str]:
    """The environment of a web or worker process: this one's, less any rampwatch setting
    of the shell's, plus the run's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS) and k not in SETTING_NAMES}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        RAMPWATCH_LOG_LEVEL=log_level(),
        **keys.env(),
    )
    env.update(extra)
    return env


def procfile(name: str) -> str:
    for line in (REPO / "Procfile").read_text().splitlines():
        key, _, command = line.partition(":")
        if key.strip() == name:
            return command.strip()
    raise KeyError(f"no {name} line in the Procfile")


class Proc:
    """One process of ours, output to ``<folder>/<name>.log``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], folder: Path):
        self.name = name
        self.log = folder / f"{name}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                args,
                cwd=folder,  # no .env of the checkout's is read
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        self.started = time.monotonic()
        self.terminated = False

    def terminate(self) -> None:
        """SIGTERM, once: a second one asks RQ and gunicorn for a hard stop."""
        if not self.terminated and self.alive():
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status(self, field: str) -> int | None:
        """A ``/proc/<pid>/status`` figure in kB (VmHWM, VmRSS), None once it is gone."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a graceful stop), then SIGKILL to the process group it leads."""
        if self.alive():
            self.terminate()
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its session: gunicorn's workers too
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None


def start_web(env: dict[str, str], folder: Path, port: int, *, workers: int, name: str = "web") -> Proc:
    """The Procfile's ``web`` line, as a host runs it (bash expands ``${PORT:-8000}``...)."""
    env = {**env, "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": str(workers)}
    return Proc(name, ["bash", "-c", "exec " + procfile("web")], env, folder)


def start_bare_web(
    env: dict[str, str], folder: Path, port: int, *, workers: int, name: str = "hello"
) -> Proc:
    """The Procfile's ``web`` line with a hello-world Flask app (``bench/_hello.py``) in
    place of rampwatch's: the same gunicorn, settings and worker count."""
    line = procfile("web")
    app = "'receiver.wsgi:app_from_env()'"
    assert app in line, f"the Procfile's web line no longer serves {app}: {line}"
    line = line.replace(app, f"--pythonpath {shlex.quote(str(BENCH))} '_hello:create_app()'")
    env = {**env, "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": str(workers)}
    return Proc(name, ["bash", "-c", "exec " + line], env, folder)


def start_worker(env: dict[str, str], folder: Path, name: str) -> Proc:
    """The Procfile's ``worker`` line (``rampwatch worker``), named."""
    assert procfile("worker") == "rampwatch worker", procfile("worker")
    return Proc(name, [str(BIN / "rampwatch"), "worker", "--name", name], env, folder)


def wait_workers(redis: Redis, procs: Sequence[Proc], timeout: float = 60.0) -> None:
    """Wait until every worker process said it is alive (it does so once started, right
    before its drainer thread starts: ``workers.liveness``)."""
    deadline = Deadline(timeout)
    if not wait_until(lambda: all(redis.exists(alive_key(p.name)) or not p.alive() for p in procs), deadline):
        raise RuntimeError(f"the workers did not start within {timeout}s")
    for proc in procs:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited {proc.proc.returncode}:\n{proc.tail()}")


def cleanup(folder: Path, ok: bool) -> str | None:
    """Remove the run's folder (keys, logs) when all went well; else keep it and say where."""
    if ok:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    print(f"the run's logs are kept in {folder}", file=sys.stderr)
    return str(folder)


def drop_database(url: str) -> None:
    """Remove the SQLite file ``_common.database`` made for the run (and its folder);
    a PostgreSQL schema stays until the next run makes it anew."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if path.parent.name.startswith("rampwatch-bench-"):
            shutil.rmtree(path.parent, ignore_errors=True)


def wait_http(port: int, path: str, proc: Proc, timeout: float = 60.0) -> None:
    """Wait until ``http://127.0.0.1:<port><path>`` answers 200; raise with the process's
    last lines if it does not."""
    deadline = Deadline(timeout)
    while not deadline.passed:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited {proc.proc.returncode}:\n{proc.tail()}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise RuntimeError(f"{path} on port {port} did not answer 200 within {timeout}s:\n{proc.tail()}")


def wait_web(port: int, proc: Proc, workers: int, timeout: float = 60.0) -> None:
    """Wait until the web line answers ``/healthz`` and each of its ``workers`` gunicorn
    workers has loaded the app (``receiver.gunicorn_conf.READY`` in its log): load that
    starts while one is still loading lands on the others (and its connections stay there)."""
    wait_http(port, "/healthz", proc, timeout)
    ready = re.compile(READY.replace("%s", r"\d+"))
    deadline = Deadline(timeout)
    while len(ready.findall(proc.tail(10_000))) < workers:
        if deadline.passed or not proc.alive():
            raise RuntimeError(f"{proc.name}: {workers} workers did not load the app:\n{proc.tail()}")
        time.sleep(0.1)
