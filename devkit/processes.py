"""The Procfile's processes on one machine: started, watched, stopped in order.

``make run`` runs the Procfile's lines as a host would: ``release`` once, then
``web``, ``worker`` and ``clock`` as child processes, their output prefixed
with their name. Each child gets a session of its own, so a Ctrl-C in the
terminal reaches the supervisor alone, which then stops the children with
SIGTERM (what a host sends), waits for them, and only then stops what they
use (sandboxes, Redis): no child sees its Redis vanish, and none prints a
traceback on the way out. This module owns reading the Procfile, the children
(``ProcessGroup``) and waiting for the web process to be ready.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from devkit.stack import emit, say

STOP_TIMEOUT = 20.0  # seconds for every child to finish after SIGTERM (gunicorn's graceful timeout)


def read_procfile(path: Path) -> dict[str, str]:
    """The Procfile's lines, name -> command."""
    lines = {}
    for raw in path.read_text().splitlines():
        if raw.strip() and not raw.lstrip().startswith("#") and ":" in raw:
            name, command = raw.split(":", 1)
            lines[name.strip()] = command.strip()
    return lines


class ProcessGroup:
    """Procfile lines as child processes with prefixed output."""

    def __init__(self, env: Mapping[str, str], cwd: Path):
        self.env = dict(env)
        self.cwd = cwd
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._pumps: list[threading.Thread] = []

    def _spawn(self, command: str) -> subprocess.Popen[bytes]:
        # exec: the child is the command itself, so SIGTERM reaches it and not a shell.
        return subprocess.Popen(
            ["/bin/sh", "-c", f"exec {command}"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # out of the terminal's process group: Ctrl-C is ours
        )

    def start(self, name: str, command: str) -> None:
        proc = self._spawn(command)
        self.children.append((name, proc))
        pump = threading.Thread(target=self._pump, args=(name, proc), name=f"pump-{name}", daemon=True)
        pump.start()
        self._pumps.append(pump)

    def run_once(self, name: str, command: str) -> int:
        """Run ``command`` to its end, its output prefixed; its exit code."""
        say(f"{name}: {command}")
        proc = self._spawn(command)
        self._pump(name, proc)
        return proc.wait()

    @staticmethod
    def _pump(name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            emit(f"{name:>7} | {line.decode(errors='replace').rstrip()}")
        proc.stdout.close()

    def dead(self) -> list[str]:
        return [name for name, proc in self.children if proc.poll() is not None]

    def stop(self, timeout: float = STOP_TIMEOUT) -> dict[str, int]:
        """SIGTERM every child, wait for all of them (SIGKILL to the child's process group
        past ``timeout``), let their output drain; each one's exit code."""
        for _name, proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = {}
        for name, proc in self.children:
            try:
                codes[name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop within {timeout:g}s: killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = proc.wait()
        for pump in self._pumps:
            pump.join(timeout=2)
        return codes


def wait_ready(url: str, group: ProcessGroup, stop: threading.Event, timeout: float = 30.0) -> bool:
    """Poll ``url`` until it answers 200: True. False when ``stop`` is set first; RuntimeError
    when a child exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop.is_set():
            return False
        if group.dead():
            raise RuntimeError(f"process(es) exited before {url} was ready: {', '.join(group.dead())}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        stop.wait(0.2)
    raise RuntimeError(f"{url} did not become ready within {timeout:g}s")
