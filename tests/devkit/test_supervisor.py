"""``make run`` as a developer runs it: ``python -m devkit`` in a subprocess, stopped by Ctrl-C.

The supervisor starts its private Redis, the sandboxes and every Procfile process
(no demo, to stay quick), writes the stack's settings; a SIGINT to its whole
process group (what a terminal's Ctrl-C sends) must stop the processes, then
the sandboxes, then Redis, exit 0 within a bound, and leave no traceback from
any process and no Redis behind.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from orders.providers import load_settings

ROOT = Path(__file__).resolve().parents[2]
STACK_PREFIXES = ("RAMPWATCH_", "ALIXPAY_", "FUSPAY_", "CHANGELLY_")
STACK_NAMES = ("DATABASE_URL", "REDIS_URL", "REDIS_TLS_VERIFY", "PORT", "HOST", "WEB_CONCURRENCY")


class Output:
    """The child's output, line by line, read on a thread so a wait can time out."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def until(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if marker in line:
                return line
        raise AssertionError(f"no {marker!r} within {timeout}s:\n{self.text}")

    def rest(self, timeout: float) -> str:
        self._thread.join(timeout)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return self.text

    @property
    def text(self) -> str:
        return "".join(self.lines)


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables ``path`` sets, as a POSIX shell reads it."""
    out = subprocess.run(
        ["/bin/sh", "-c", f"set -a; . {path}; env -0"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        check=True,
    ).stdout.decode()
    pairs = (item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {name: value for name, value in pairs if name not in ("PATH", "PWD", "SHLVL", "_")}


@pytest.mark.timeout(90)
def test_ctrl_c_stops_the_processes_then_redis_without_a_traceback(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(STACK_PREFIXES) and k not in STACK_NAMES and k != "PYTHONPATH"
    }
    var = tmp_path / "var"
    proc = subprocess.Popen(
        [sys.executable, "-m", "devkit", "--no-demo", "--var", str(var)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job
    )
    output = Output(proc)
    try:
        started = output.until("started a private Redis", 20)
        redis_url = re.search(r"at (redis://\S+)", started).group(1)  # type: ignore[union-attr]
        output.until("serving; press Ctrl-C to stop", 60)
        redis = Redis.from_url(redis_url, socket_timeout=2)
        assert redis.ping()

        # The settings of this stack, for a second shell: private, complete, valid.
        dotenv = var / "dev" / ".env"
        assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
        assert f"settings of this stack: {dotenv}" in output.text
        values = read_dotenv(dotenv)
        assert values["REDIS_URL"] == redis_url
        assert values["DATABASE_URL"] == f"sqlite:///{var / 'rampwatch.sqlite3'}"
        for name in ("ALIXPAY_PRIVATE_KEY", "ALIXPAY_PUBLIC_KEY", "CHANGELLY_PRIVATE_KEY"):
            assert Path(values[name]).parent == var / "dev" and Path(values[name]).is_file()
        assert {"FUSPAY_BASE_URL", "CHANGELLY_CALLBACK_PUBLIC_KEY", "RAMPWATCH_API_TOKEN"} <= set(values)
        settings = load_settings(values)
        assert settings.redis_url == redis_url and settings.api_token == values["RAMPWATCH_API_TOKEN"]
        # The operator's token too, different from the partner's.
        assert settings.ops_token == values["RAMPWATCH_OPS_TOKEN"] != settings.api_token

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
        began = time.monotonic()
        assert proc.wait(timeout=30) == 0
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = output.rest(5)
    assert "Traceback" not in text, text
    assert took < 25, text
    order = [
        "stopping web, worker, clock",
        "stopped web, worker, clock\n",  # every one exited 0 (else the exit codes are listed)
        "stopped the alixpay, fuspay, changelly sandboxes",
        f"stopped the private Redis at {redis_url}",
    ]
    assert [text.find(line) for line in order] == sorted(text.find(line) for line in order), text
    assert all(line in text for line in order), text
    with pytest.raises(RedisConnectionError):
        Redis.from_url(redis_url, socket_connect_timeout=1).ping()
