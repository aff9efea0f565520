"""The rampwatch command: processes, orders, reconcile; its errors, help, version and pipes.

In-process (``workers.cli.main`` and click's CliRunner) against the AliX sandbox and the
private Redis, and as the installed console script where the process matters (the
version, a closed pipe, a run outside any checkout)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_support import PERSONAL, alix_event, base_env, run, set_created, store_for
from conftest import Keys, alix_env
from redis import Redis

from devkit.alixpay.sandbox import AlixSandbox
from workers import cli
from workers.clock import Clock
from workers.queue import Queues

RAMPWATCH = str(Path(sys.executable).parent / "rampwatch")

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
    monkeypatch.chdir(tmp_path)  # no .env of a checkout
    for k, v in {**alix_env(keys, sandbox.url), **base_env(f"sqlite:///{db}", redis)}.items():
        monkeypatch.setenv(k, v)
    return db


def test_migrate_create_reconcile_show(
    env: Path, sandbox: AlixSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["migrate"]) == 0
    assert f"database sqlite:///{env} is at the newest schema" in capsys.readouterr().out
    assert cli.main(["orders", "create", "alixpay", json.dumps(ORDER), "--idempotency-key", "k-1"]) == 0
    assert "cli-1: AWAITING_PAYMENT" in capsys.readouterr().out
    assert cli.main(["orders", "create", "alixpay", json.dumps(ORDER), "--idempotency-key", "k-1"]) == 0
    assert "(replayed: created before)" in capsys.readouterr().out
    other = {**ORDER, "fiatAmount": 800000}
    assert cli.main(["orders", "create", "alixpay", json.dumps(other), "--idempotency-key", "k-1"]) == 1
    assert "idempotency" in capsys.readouterr().err.lower()
    sandbox.set_switches(drop=True)
    sandbox.advance("cli-1", "SUCCESS")
    assert cli.main(["reconcile", "--provider", "alixpay", "--order", "cli-1", "--dry-run"]) == 0
    assert "provider says SUCCESS (dry run, nothing applied)" in capsys.readouterr().out
    assert cli.main(["orders", "show", "alixpay", "cli-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "AWAITING_PAYMENT"
    assert cli.main(["reconcile", "--provider", "alixpay"]) == 0
    assert "cli-1: provider says SUCCESS -> applied; now SUCCESS v3" in capsys.readouterr().out
    assert cli.main(["orders", "show", "alixpay", "cli-1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "alixpay cli-1: SUCCESS (provider SUCCESS, version 3)"
    assert "poll     SUCCESS" in out and "applied" in out
    assert "notifications:" in out and "order.status_changed v3  pending" in out
    assert "0123456789" not in out  # raw bodies (bank data) only with --raw
    assert cli.main(["orders", "show", "alixpay", "cli-1", "--raw"]) == 0
    assert "raw: " in (raw := capsys.readouterr().out) and "0123456789" in raw


def test_reconcile_reports_failures_and_bad_arguments(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate"]) == 0
    assert cli.main(["reconcile", "--provider", "alixpay", "--order", "nobody"]) == 1
    assert "FAILED ProviderRejected" in capsys.readouterr().out
    assert cli.main(["reconcile", "--order", "x"]) == 2
    assert capsys.readouterr().err == "rampwatch reconcile: --order needs --provider\n"
    assert cli.main(["reconcile"]) == 2
    assert cli.main(["reconcile", "--provider", "fuspay"]) == 2
    assert "provider fuspay is not configured" in capsys.readouterr().err
    assert cli.main(["reconcile", "--provider", "nopay"]) == 2  # not a provider at all
    assert "'nopay' is not one of" in capsys.readouterr().err
    assert cli.main(["reconcile", "--all-open", "--since", "2026-02-01", "--until", "2026-01-01"]) == 2
    assert "--until must be after --since" in capsys.readouterr().err
    assert cli.main(["orders", "show", "alixpay", "nobody"]) == 1
    assert capsys.readouterr().err == "rampwatch orders show: no alixpay order nobody\n"


def test_reconcile_since_until_takes_the_orders_created_in_the_range(
    env: Path, capsys: pytest.CaptureFixture[str], sandbox: AlixSandbox
) -> None:
    assert cli.main(["migrate"]) == 0
    store = store_for(f"sqlite:///{env}")
    store.apply([alix_event("old-1", "AWAITING_PAYMENT"), alix_event("new-1", "AWAITING_PAYMENT")])
    set_created(store, "old-1", datetime(2026, 1, 5, tzinfo=UTC))
    set_created(store, "new-1", datetime(2026, 3, 5, tzinfo=UTC))
    capsys.readouterr()
    assert cli.main(["reconcile", "--all-open", "--since", "2026-03-01", "--enqueue", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert [o["external_order_id"] for o in answer["orders"]] == ["new-1"]
    assert cli.main(["reconcile", "--provider", "alixpay", "--until", "2026-02-01", "--enqueue"]) == 0
    out = capsys.readouterr().out
    assert "alixpay old-1: poll queued" in out and "new-1" not in out


def test_bad_settings_list_every_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", "http://nope")
    monkeypatch.setenv("ALIXPAY_PARTNER_CODE", "x")
    assert cli.main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rampwatch migrate: ")
    assert "REDIS_URL" in err and "ALIXPAY_SECRET_KEY" in err and "ALIXPAY_PUBLIC_KEY" in err
    assert "Traceback" not in err


def test_reconcile_does_not_race_a_poll_under_way(
    env: Path, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["migrate"]) == 0
    assert cli.main(["orders", "create", "alixpay", json.dumps(ORDER)]) == 0
    capsys.readouterr()
    lock = Queues(redis).poll_lock("alixpay", "cli-1")
    assert lock.acquire(blocking=False)  # a worker is polling it
    try:
        assert cli.main(["reconcile", "--provider", "alixpay", "--order", "cli-1"]) == 0
    finally:
        lock.release()
    assert "cli-1: another poll of it is under way; one more is scheduled" in capsys.readouterr().out


def test_orders_list_filters_and_renders_a_table_or_json(
    database_url: str, redis: Redis, tmp_path: Path
) -> None:
    store = store_for(database_url)
    store.apply([alix_event("a-1", "AWAITING_PAYMENT"), alix_event("a-2", "SUCCESS")])
    set_created(
        store, "a-1", datetime.now(UTC), stuck_at=datetime.now(UTC), stuck_reason="no callback for 2h"
    )
    env = base_env(database_url, redis)
    listed = run(["orders", "list"], env, tmp_path)
    assert listed.exit_code == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["PROVIDER", "ORDER", "STATUS"]
    assert [r.split()[1] for r in rows] == ["a-2", "a-1"]  # newest first
    assert PERSONAL not in listed.stdout
    stuck = run(["orders", "list", "--stuck", "--json"], env, tmp_path)
    found = json.loads(stuck.stdout)["orders"]
    assert [(o["external_order_id"], o["stuck_reason"]) for o in found] == [("a-1", "no callback for 2h")]
    done = run(["orders", "list", "--status", "success", "--provider", "alixpay", "--json"], env, tmp_path)
    assert [o["external_order_id"] for o in json.loads(done.stdout)["orders"]] == ["a-2"]
    none = run(["orders", "list", "--provider", "changelly"], env, tmp_path)
    assert none.exit_code == 0 and none.stdout == "" and "no orders match" in none.stderr
    shown = run(["orders", "show", "alixpay", "a-1"], env, tmp_path)
    assert "STUCK since" in shown.stdout and "no callback for 2h" in shown.stdout
    assert "[ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY]" in shown.stdout
    assert PERSONAL not in shown.stdout


def test_a_database_without_the_schema_says_run_migrate(redis: Redis, tmp_path: Path) -> None:
    db = tmp_path / "empty.sqlite3"
    db.touch()
    done = run(["orders", "list"], base_env(f"sqlite:///{db}", redis), tmp_path)
    assert done.exit_code == 1
    assert (
        done.stderr
        == f"rampwatch orders list: the database at sqlite:///{db} has no schema: run `rampwatch migrate`\n"
    )


def test_help_lists_every_command_without_markup() -> None:
    from click.testing import CliRunner

    out = CliRunner().invoke(cli.cli, ["--help"]).output
    for command in (
        "backfill",
        "migrate",
        "worker",
        "clock",
        "orders",
        "reconcile",
        "replay",
        "anomalies",
        "dlq",
        "notifications",
        "keys",
        "simulate",
        "export",
        "dev",
    ):
        assert f"  {command} " in out, command
    assert "``" not in out


def _console(*args: str, cwd: Path, **kw: object) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "HOME", "TMPDIR")}
    env.update(kw.pop("env", {}))  # type: ignore[arg-type]
    return subprocess.Popen([RAMPWATCH, *args], cwd=cwd, env=env, **kw)  # type: ignore[arg-type]


def test_version_from_the_console_script(tmp_path: Path) -> None:
    proc = _console("--version", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.decode().startswith("rampwatch, version ")


def test_a_reader_that_leaves_early_is_no_error(database_url: str, redis: Redis, tmp_path: Path) -> None:
    store = store_for(database_url)
    store.apply([alix_event(f"p-{i}", "AWAITING_PAYMENT") for i in range(50)])
    env = base_env(database_url, redis)
    proc = _console("orders", "list", cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head -0`: the reader is gone before the first line
    err = proc.stderr.read()
    proc.wait(timeout=30)
    assert err == b""
    assert proc.returncode in (0, 141)


def test_outside_a_checkout_a_read_creates_nothing_and_says_one_line(tmp_path: Path) -> None:
    proc = _console(
        "orders", "show", "alixpay", "x", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert out == b""
    assert err.decode().splitlines() == [
        f"rampwatch orders show: no database at {tmp_path}/var/rampwatch.sqlite3 (DATABASE_URL):"
        " run `rampwatch migrate` to create it"
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_second_clock_says_it_is_on_standby_and_when_it_takes_over(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rampwatch.clock")
    first, second = (Clock(redis, Queues(redis), 0.05, threading.Event()) for _ in range(2))
    runs = [threading.Thread(target=c.run, daemon=True) for c in (first, second)]
    runs[0].start()
    deadline = time.monotonic() + 5
    while first.ticks == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    runs[1].start()
    time.sleep(0.5)
    standby = [r.getMessage() for r in caplog.records if "standby" in r.getMessage()]
    assert len(standby) == 1 and second.ticks == 0
    first.stop.set()
    runs[0].join(5)
    deadline = time.monotonic() + 5
    while second.ticks == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    second.stop.set()
    runs[1].join(5)
    assert second.ticks > 0
    assert any("took over" in r.getMessage() for r in caplog.records)
    assert len([r for r in caplog.records if "standby" in r.getMessage()]) == 1


def test_python_dash_m_runs_the_same_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
        timeout=30,
    )
    assert done.returncode == 0 and "Usage: rampwatch" in done.stdout
