"""Real rampwatch processes for the fault tests and the soak, each one killable as a host kills it.

``Fleet.start(name, argv)`` runs one process (``rampwatch worker``, ``rampwatch
clock``, gunicorn...) in a session of its own, its output in ``<logs>/<name>.log``.
``kill()`` SIGKILLs its whole process group, as a crashed dyno loses every process
it ran (RQ's scheduler, when forked, goes with its worker); ``terminate()`` sends
SIGTERM and waits, as a host's restart does. ``exited()`` names the processes that
ended without being told to: a fault test asserts it stays empty. This module owns
those processes and their logs; what they run is the caller's choice
(``rampwatch_argv`` for the product's own commands).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def rampwatch_argv(*args: str) -> list[str]:
    """``rampwatch <args>`` run from the checkout in the working directory (``python -m
    workers.cli``: the code of that checkout, whatever is installed)."""
    return [sys.executable, "-m", "workers.cli", *args]


class Member:
    """One process of the fleet."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path):
        self.name = name
        self.proc = proc
        self.log = log
        self.told_to_stop = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the process and everything in its group: a crash."""
        self.told_to_stop = True
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (to the process alone, as a host sends it), then wait; its exit code.
        Past ``timeout``, SIGKILL."""
        self.told_to_stop = True
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            return self.proc.wait(timeout=10)

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


class Fleet:
    """Processes started with one environment, working directory and log folder."""

    def __init__(self, env: Mapping[str, str], cwd: Path, logs: Path):
        self.env = dict(env)
        self.cwd = cwd
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.members: list[Member] = []

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Member:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                cwd=self.cwd,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() takes all of it
            )
        member = Member(name, proc, log)
        self.members.append(member)
        return member

    def exited(self) -> list[str]:
        """The processes that ended without being told to (name and exit code)."""
        return [f"{m.name} (exit {m.returncode})" for m in self.members if not m.alive and not m.told_to_stop]

    def stop(self, timeout: float = 20.0) -> dict[str, int]:
        """SIGTERM every live member, wait; each one's exit code."""
        codes = {}
        for member in self.members:
            if member.alive:
                member.told_to_stop = True
                member.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for member in self.members:
            try:
                codes[member.name] = member.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                member.kill()
                codes[member.name] = member.proc.wait()
        return codes
