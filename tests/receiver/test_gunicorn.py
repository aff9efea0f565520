"""The web process as the Procfile starts it: real gunicorn, real Redis, a SQLite file.

The cases a hostile tester found against the sync workers: two clients that
announce a body and stop sending held both workers (and /healthz) for gunicorn's
whole 30 s; an outside write lock on the SQLite file held /readyz and API reads
for 30 s, and callbacks timed out behind them; a chunked body over 64 KiB was cut
to 64 KiB and accepted; a very long order id got gunicorn's HTML 414 page.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from conftest import WEBHOOK_SECRET, Keys, alix_env
from redis import Redis
from scenarios import alixpay_sell

from devkit.localredis import PrivateRedis, free_port
from orders.db import make_engine
from orders.migrate import upgrade
from orders.providers.alixpay import signing
from receiver import WEB_DATABASE_WAIT
from receiver.body import BODY_IDLE_TIMEOUT
from workers.stream import STREAM

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "gunicorn-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROMPT = 1.5  # seconds: "at once", with room for a loaded 2-core machine
BOUND = WEB_DATABASE_WAIT + 2.0  # a database wait runs out, then the answer


def procfile_web() -> str:
    lines = (ROOT / "Procfile").read_text(encoding="utf-8").splitlines()
    return next(line.split(": ", 1)[1] for line in lines if line.startswith("web: "))


class Web:
    """The Procfile's web line in its own process group, stopped as a host stops a dyno."""

    def __init__(self, env: dict[str, str], log: Path):
        self.port = int(env["PORT"])
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            ["bash", "-c", procfile_web()],
            cwd=log.parent,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                if requests.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"gunicorn did not answer:\n{self.output()}"
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._out.close()


def web_env(tmp: Path, redis_server: PrivateRedis, keys: Keys, database: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("LANG", "TMPDIR")}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {
        **keep,
        "PATH": path,
        "PYTHONPATH": str(ROOT),  # this checkout's code, whatever the venv has installed
        "HOME": str(tmp),  # gunicorn's control socket
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "WEB_CONCURRENCY": "2",
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": redis_server.url,
        "RAMPWATCH_API_TOKEN": TOKEN,
        **alix_env(keys, "http://127.0.0.1:9"),  # no AliX call is made here
    }


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gunicorn-db") / "web.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="module")
def web(
    tmp_path_factory: pytest.TempPathFactory, redis_server: PrivateRedis, keys: Keys, database: Path
) -> Iterator[Web]:
    tmp = tmp_path_factory.mktemp("gunicorn")
    web = Web(web_env(tmp, redis_server, keys, database), tmp / "web.log")
    yield web
    web.stop()


def ipn(keys: Keys, order_id: str, status: str = "AWAITING_PAYMENT") -> bytes:
    body = {"externalOrderId": order_id, "type": "sell", "fiatAmount": 100000, "status": status}
    body["signature"] = signing.sign(signing.response_fields(body), WEBHOOK_SECRET, keys.alix.private)
    return json.dumps(body).encode()


def post_ipn(web: Web, body: bytes, timeout: float = PROMPT) -> requests.Response:
    return requests.post(
        f"{web.base}/webhooks/alixpay",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=timeout,
    )


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    resp = call()
    return resp, time.monotonic() - started


def queued(redis: Redis) -> int:
    """Callbacks queued for apply: entries of the callback stream."""
    return int(redis.xlen(STREAM))


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


# ------------------------------------------------------------------ slow clients


def test_two_slow_clients_do_not_hold_healthz_or_webhooks(web: Web, redis: Redis, keys: Keys) -> None:
    slow = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", web.port), timeout=5)
        sock.sendall(
            b"POST /webhooks/alixpay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"a":'
        )
        slow.append(sock)
    try:
        time.sleep(0.5)  # both are in a worker, waiting for the other 995 bytes
        health, took = timed(lambda: requests.get(f"{web.base}/healthz", timeout=PROMPT))
        assert health.status_code == 200 and took < PROMPT
        accepted, took = timed(lambda: post_ipn(web, ipn(keys, "slow-1")))
        assert accepted.status_code == 200 and took < PROMPT, accepted.text
        assert queued(redis) == 1
        # And the slow clients are not held forever: 408, in JSON, once they stay silent.
        for sock in slow:
            answer = read_answer(sock, BODY_IDLE_TIMEOUT + 5)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer
            assert json.loads(body)["code"] == "request_timeout"
    finally:
        for sock in slow:
            sock.close()


# ------------------------------------------------------------------ a locked database


@contextmanager
def write_lock(database: Path) -> Iterator[None]:
    """What another process's long write does: the SQLite write lock, held."""
    outside = sqlite3.connect(database, isolation_level=None)
    outside.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        outside.execute("ROLLBACK")
        outside.close()


def test_a_write_lock_holds_no_read_and_bounds_writes(
    web: Web, redis: Redis, keys: Keys, database: Path
) -> None:
    with write_lock(database):
        health, took = timed(lambda: requests.get(f"{web.base}/healthz", timeout=PROMPT))
        assert health.status_code == 200 and took < PROMPT
        accepted, took = timed(lambda: post_ipn(web, ipn(keys, "locked-1")))
        assert accepted.status_code == 200 and took < PROMPT, accepted.text
        # Readers take no write lock: they answer at once.
        ready, took = timed(lambda: requests.get(f"{web.base}/readyz", timeout=PROMPT))
        assert ready.status_code == 200 and took < PROMPT, ready.text
        view, took = timed(
            lambda: requests.get(f"{web.base}/api/orders/alixpay/none", headers=AUTH, timeout=PROMPT)
        )
        assert view.status_code == 404 and view.json()["code"] == "order_not_found" and took < PROMPT
        # A write waits for the lock within the bound, then says so.
        create = alixpay_sell("locked-create")
        refused, took = timed(
            lambda: requests.post(
                f"{web.base}/api/orders/alixpay", json=create, headers=AUTH, timeout=BOUND + 5
            )
        )
        assert refused.status_code == 503 and took < BOUND, (refused.text, took)
        assert refused.json()["code"] == "database_unavailable" and refused.headers["Retry-After"]
    assert queued(redis) == 1
    assert "Traceback" not in web.output()


def test_readers_locked_out_answer_503_within_the_bound(
    tmp_path: Path, redis_server: PrivateRedis, redis: Redis, keys: Keys
) -> None:
    """A lock that keeps readers out too (an EXCLUSIVE-mode connection, taken before the
    web process first opens the file): /readyz and API reads give up within the
    bound, in JSON with Retry-After; /healthz and webhooks do not notice."""
    database = tmp_path / "exclusive.sqlite3"
    engine = make_engine(f"sqlite:///{database}")
    upgrade(engine)
    engine.dispose()  # no connection of ours keeps the WAL index open
    outside = sqlite3.connect(database, isolation_level=None)
    outside.execute("PRAGMA locking_mode=EXCLUSIVE")
    outside.execute("BEGIN EXCLUSIVE")
    web = Web(web_env(tmp_path, redis_server, keys, database), tmp_path / "web.log")
    try:
        health, took = timed(lambda: requests.get(f"{web.base}/healthz", timeout=PROMPT))
        assert health.status_code == 200 and took < PROMPT
        accepted, took = timed(lambda: post_ipn(web, ipn(keys, "exclusive-1")))
        assert accepted.status_code == 200 and took < PROMPT, accepted.text
        # One after the other: until the process has once connected, SQLAlchemy makes
        # connection attempts wait on each other (its first-connect lock).
        ready, took = timed(lambda: requests.get(f"{web.base}/readyz", timeout=BOUND + 5))
        assert ready.status_code == 503 and took < BOUND, (ready.text, took)
        assert ready.json()["checks"]["database"].startswith("unavailable") and ready.headers["Retry-After"]
        view, took = timed(
            lambda: requests.get(f"{web.base}/api/orders/alixpay/x", headers=AUTH, timeout=BOUND + 5)
        )
        assert view.status_code == 503 and took < BOUND, (view.text, took)
        assert view.json()["code"] == "database_unavailable" and view.headers["Retry-After"]
    finally:
        outside.close()
        web.stop()
    assert "Traceback" not in web.output()
    assert queued(redis) == 1


# ------------------------------------------------------------------ framing and limits


def test_a_chunked_body_over_the_cap_is_413_and_one_under_it_is_read_whole(
    web: Web, redis: Redis, keys: Keys
) -> None:
    big = b'{"externalOrderId": "big", "pad": "' + b"x" * (70 * 1024) + b'"}'
    resp = requests.post(
        f"{web.base}/webhooks/alixpay",
        data=iter([big[i : i + 8192] for i in range(0, len(big), 8192)]),  # Transfer-Encoding: chunked
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 413, resp.text
    assert resp.json()["code"] == "request_entity_too_large"
    body = ipn(keys, "chunked-1")
    resp = requests.post(
        f"{web.base}/webhooks/alixpay",
        data=iter([body[:40], body[40:]]),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert queued(redis) == 1


def test_a_very_long_order_id_is_refused_in_json(web: Web) -> None:
    resp = requests.get(f"{web.base}/api/orders/alixpay/{'x' * 5000}", headers=AUTH, timeout=5)
    assert resp.status_code == 414
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json()["code"] == "uri_too_long" and "4094" in resp.json()["error"]
    # Shorter than gunicorn's limit but longer than any order id: the app says so.
    resp = requests.get(f"{web.base}/api/orders/alixpay/{'x' * 200}", headers=AUTH, timeout=5)
    assert resp.status_code == 400 and resp.json()["fields"] == ["external_order_id"]


# ------------------------------------------------------------------ connections shared fairly


def wait_ready(web: Web, workers: int = 2, timeout: float = 30.0) -> list[int]:
    """The worker pids, once each logged that it loaded the app (``gunicorn_conf.READY``)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [int(p) for p in re.findall(r"worker (\d+) ready", web.output())]
        alive = [p for p in pids if Path(f"/proc/{p}").exists()]
        if len(alive) >= workers:
            return alive[-workers:]
        assert time.monotonic() < deadline, f"the workers did not load the app:\n{web.output()}"
        time.sleep(0.1)


def connections_held(pids: list[int], port: int) -> dict[int, int]:
    """How many established connections to ``port`` each process holds (Linux /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
            inodes.add(fields[9])
    held = {}
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        links = [os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink()]
        held[pid] = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
    return held


def test_keep_alive_connections_are_shared_between_the_workers(web: Web) -> None:
    """16 keep-alive connections opened at once (a provider's, a proxy's or a load
    generator's pool): gunicorn's workers let the first one awake take them all (16/0,
    14/2, 13/3 in 3 runs of 4, one core idle); each takes half now, three bursts in a row."""
    pids = wait_ready(web)
    for burst in range(3):
        socks = [socket.create_connection(("127.0.0.1", web.port), timeout=5) for _ in range(16)]
        try:
            for sock in socks:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for sock in socks:
                assert read_answer(sock, 5).startswith(b"HTTP/1.1 200"), burst
            held = connections_held(pids, web.port)
            assert sum(held.values()) == 16, held
            assert all(6 <= n <= 10 for n in held.values()), f"burst {burst}: {held}"
        finally:
            for sock in socks:
                sock.close()
        time.sleep(0.3)  # the workers see the connections close
