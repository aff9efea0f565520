"""The rampwatch command, run in-process against the sandbox and the private Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Keys, alix_env
from redis import Redis

from devkit.alixpay.sandbox import AlixSandbox
from workers import cli

ORDER = {
    "externalOrderId": "cli-1",
    "currency": "USDT",
    "network": "TRC20",
    "fiatAmount": 700000,
    "bankCode": "VCB",
    "bankAccountNumber": "0123456789",
    "bankAccountName": "NGUYEN VAN A",
}


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, redis: Redis, keys: Keys, sandbox: AlixSandbox, tmp_path: Path
) -> Path:
    db = tmp_path / "cli.sqlite3"
    port = redis.connection_pool.connection_kwargs["port"]
    for k, v in {
        **alix_env(keys, sandbox.url),
        "DATABASE_URL": f"sqlite:///{db}",
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
    }.items():
        monkeypatch.setenv(k, v)
    return db


def test_migrate_create_reconcile_show(
    env: Path, sandbox: AlixSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["migrate"]) == 0
    assert f"database sqlite:///{env} is at the newest schema" in capsys.readouterr().out
    assert cli.main(["orders", "create", "alixpay", json.dumps(ORDER)]) == 0
    assert "cli-1: AWAITING_PAYMENT" in capsys.readouterr().out
    sandbox.set_switches(drop=True)
    sandbox.advance("cli-1", "SUCCESS")
    assert cli.main(["reconcile", "--provider", "alixpay", "--order", "cli-1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "provider says SUCCESS (dry run, nothing applied)" in out
    assert cli.main(["orders", "show", "alixpay", "cli-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "AWAITING_PAYMENT"
    assert cli.main(["reconcile", "--provider", "alixpay"]) == 0
    out = capsys.readouterr().out
    assert "cli-1: provider says SUCCESS -> applied; now SUCCESS v3" in out
    assert cli.main(["orders", "show", "alixpay", "cli-1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "alixpay cli-1: SUCCESS (provider SUCCESS, version 3)"
    assert "poll     SUCCESS" in out and "applied" in out
    assert "0123456789" not in out  # raw bodies (bank data) only with --raw


def test_reconcile_reports_failures_and_bad_arguments(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate"]) == 0
    assert cli.main(["reconcile", "--provider", "alixpay", "--order", "nobody"]) == 1
    assert "FAILED ProviderRejected" in capsys.readouterr().out
    assert cli.main(["reconcile", "--order", "x"]) == 2
    assert cli.main(["reconcile"]) == 2
    assert cli.main(["reconcile", "--provider", "fuspay"]) == 2
    assert cli.main(["orders", "show", "alixpay", "nobody"]) == 1


def test_bad_settings_list_every_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "http://nope")
    monkeypatch.setenv("ALIXPAY_PARTNER_CODE", "x")
    with pytest.raises(SystemExit) as exc:
        cli.main(["migrate"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "REDIS_URL" in err and "ALIXPAY_SECRET_KEY" in err and "ALIXPAY_PUBLIC_KEY" in err


def test_reconcile_does_not_race_a_poll_under_way(
    env: Path, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    from workers.queue import Queues

    assert cli.main(["migrate"]) == 0
    assert cli.main(["orders", "create", "alixpay", json.dumps(ORDER)]) == 0
    capsys.readouterr()
    lock = Queues(redis).poll_lock("alixpay", "cli-1")
    assert lock.acquire(blocking=False)  # a worker is polling it
    try:
        assert cli.main(["reconcile", "--provider", "alixpay", "--order", "cli-1"]) == 0
    finally:
        lock.release()
    out = capsys.readouterr().out
    assert "cli-1: another poll of it is under way; one more is scheduled" in out
