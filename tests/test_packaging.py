"""The artefact a host installs, not the editable checkout (STYLE habit 18).

The wheel is built from a copy of the checkout's files (so a stale ``build/`` can
hide no missing file) and must hold every module of the product packages and
their data files. It is installed, with the pins of ``requirements.txt`` and
nothing else, into a fresh virtual environment in a temporary folder; from a
working directory outside the checkout, each Procfile line then runs as a
Procfile host runs it (``bash -c``): ``web`` (gunicorn, ``/healthz`` and
``/readyz``), ``release`` (``rampwatch migrate`` on SQLite, and on PostgreSQL in a
private schema when ``RAMPWATCH_TEST_POSTGRES_URL`` is set), ``clock`` (briefly)
and ``worker`` in burst mode, which runs the sweep the clock queued.

Marked ``packaging``: pip builds the wheel in an isolated environment and
installs the pinned requirements, which takes about half a minute and reaches PyPI.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import requests
from conftest import WEBHOOK_SECRET, Keys, alix_env
from redis import Redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from sqlalchemy import create_engine, text

from devkit.localredis import free_port
from orders.migrate import Revisions, current_revisions
from orders.providers.alixpay import signing
from workers.queue import SWEEP_JOB_ID
from workers.stream import STREAM

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("config", "orders", "receiver", "workers")
# Files other than modules that the product reads or ships for operators.
PRODUCT_DATA = (
    "config/example.env",
    "orders/migrations/script.py.mako",
    # the console's pages, read by Jinja at run time
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "receiver/console/templates").rglob("*.html")),
)
POSTGRES_URL = os.environ.get("RAMPWATCH_TEST_POSTGRES_URL")
DB_PARAMS = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])
T = TypeVar("T")
OPS = "ops-token-for-the-installed-web-0123"


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text(encoding="utf-8").splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def source_files(root: Path) -> list[Path]:
    """The checkout's files as a host receives them: tracked and new ones, not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [Path(p) for p in sorted(set(listed.split("\0"))) if p and (root / p).is_file()]


def product_files(files: tuple[Path, ...]) -> set[str]:
    modules = {p.as_posix() for p in files if p.parts[0] in PRODUCT and p.suffix == ".py"}
    return modules | set(PRODUCT_DATA)


def base_env(tmp: Path) -> dict[str, str]:
    """No PYTHONPATH, no virtualenv and no rampwatch setting leaks in from the test run;
    pip keeps this machine's own configuration. HOME is in tmp too (pip's cache,
    gunicorn's control socket), so nothing is left outside it."""
    keep = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in ("LANG", "PATH")}
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {**keep, "HOME": str(home), "PIP_CACHE_DIR": str(tmp / "pip-cache"), "PIP_NO_INPUT": "1"}


def run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass(frozen=True)
class Installed:
    venv: Path
    wheel: Path
    files: tuple[Path, ...]  # the checkout's files the wheel was built from
    work: Path  # an empty working directory outside the checkout
    env: dict[str, str]

    def with_settings(self, **settings: str) -> dict[str, str]:
        path = f"{self.venv / 'bin'}{os.pathsep}{self.env['PATH']}"
        return {**self.env, "PATH": path, **settings}

    @staticmethod
    def procfile_line(name: str, *extra: str) -> list[str]:
        """A Procfile line as a host runs it (bash expands ``${PORT:-8000}`` and the like)."""
        return ["bash", "-c", " ".join([procfile()[name], *extra])]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("packaging")
    assert not tmp.is_relative_to(ROOT)
    env = base_env(tmp)
    source = tmp / "source"
    files = tuple(source_files(ROOT))
    for rel in files:
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, source / rel)
    # The wheel, built as pip builds `.` from requirements.txt (isolated build environment).
    dist = tmp / "dist"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        cwd=tmp,
        env=env,
    )
    (wheel,) = dist.glob("rampwatch-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp, env=env)
    pins = tmp / "pins.txt"
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert lines[-1].strip() == ".", "requirements.txt must end by installing rampwatch itself"
    pins.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    run([*pip, "-r", str(pins)], cwd=tmp, env=env, timeout=100)
    run([*pip, "--no-deps", str(wheel)], cwd=tmp, env=env)
    # The pins satisfy every requirement the wheel declares.
    run([str(venv / "bin" / "python"), "-m", "pip", "check"], cwd=tmp, env=env)
    work = tmp / "work"
    work.mkdir()
    return Installed(venv, wheel, files, work, env)


def test_the_wheel_holds_every_file_the_product_needs(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    needed = product_files(installed.files)
    assert sorted(needed - names) == []
    # Positive controls: the files a normal install used to lose are among those checked.
    assert "orders/migrations/env.py" in needed
    versions = {n for n in needed if n.startswith("orders/migrations/versions/")}
    assert versions == {
        f"orders/migrations/versions/{p.name}" for p in (ROOT / "orders/migrations/versions").glob("*.py")
    }
    assert any(not n.endswith("/__init__.py") for n in versions)  # at least one revision script
    # Tests, benchmarks and the dev kit are not the product.
    assert not {n for n in names if n.startswith(("tests/", "bench/", "devkit/"))}
    assert any(p.parts[0] == "devkit" for p in installed.files)  # the checkout has it: it was left out
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "rampwatch = workers.cli:main" in zipfile.ZipFile(installed.wheel).read(entry_points).decode()


def test_the_install_imports_from_itself_not_the_checkout(installed: Installed) -> None:
    out = run(
        [
            str(installed.venv / "bin" / "python"),
            "-c",
            "import config, orders, receiver, workers, orders.migrations.versions as v; "
            "print('\\n'.join(m.__file__ for m in (config, orders, receiver, workers, v)))",
        ],
        cwd=installed.work,
        env=installed.with_settings(),
    )
    site = installed.venv / "lib"
    files = [Path(line) for line in out.splitlines()]
    assert len(files) == 5
    assert all(f.is_relative_to(site) for f in files), files


def test_the_product_runs_without_the_dev_kit(installed: Installed) -> None:
    """Every product module imports from the install, where devkit/ is not; `rampwatch dev`
    says in one line that it runs from a checkout."""
    script = (
        "import importlib, pkgutil, sys\n"
        "import config, orders, receiver, workers\n"
        "names = [m.name for p in (config, orders, receiver, workers)\n"
        "         for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]\n"
        "for name in names:\n"
        "    if not name.startswith('orders.migrations'):  # Alembic's scripts, run by Alembic\n"
        "        importlib.import_module(name)\n"
        "print(len(names), sorted(m for m in sys.modules if m.split('.')[0] == 'devkit'), flush=True)\n"
        "import devkit\n"
    )
    env = installed.with_settings()
    python = str(installed.venv / "bin" / "python")
    imported = subprocess.run(
        [python, "-c", script], cwd=installed.work, env=env, capture_output=True, text=True, timeout=60
    )
    assert " " in imported.stdout, imported
    count, loaded = imported.stdout.split(" ", 1)
    assert int(count) >= 30 and loaded.strip() == "[]", imported
    assert "ModuleNotFoundError: No module named 'devkit'" in imported.stderr, imported

    rampwatch = str(installed.venv / "bin" / "rampwatch")
    dev = subprocess.run(
        [rampwatch, "dev", "--exit-after-demo"],
        cwd=installed.work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dev.returncode == 2, dev
    assert dev.stdout == "" and len(dev.stderr.splitlines()) == 1, dev
    assert "runs from a checkout of rampwatch" in dev.stderr, dev
    assert list(installed.work.iterdir()) == []  # nothing started, nothing written


def _pg_url(schema: str) -> str:
    """A host's DATABASE_URL, limited to one schema (as tests/conftest.py does)."""
    assert POSTGRES_URL
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=DB_PARAMS)
def host_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database as a host's DATABASE_URL names it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'host.sqlite3'}"
        return
    schema = f"pkg_{uuid.uuid4().hex[:12]}"
    admin = create_engine(_pg_url("public").replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def revisions_of(url: str) -> tuple[str, ...]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return current_revisions(conn)
    finally:
        engine.dispose()


def test_release_migrates_to_the_newest_revision(installed: Installed, host_database: str) -> None:
    env = installed.with_settings(DATABASE_URL=host_database)
    out = run(installed.procfile_line("release"), cwd=installed.work, env=env)
    assert out.strip().endswith("is at the newest schema")
    assert revisions_of(host_database) == Revisions.load().heads


class Process:
    """A Procfile process in its own process group, stopped as a host stops a dyno."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str], log: Path):
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise
        finally:
            self._out.close()


def wait_for(check: Callable[[], T | None], what: str, process: Process, timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.proc.poll() is None, f"{what}: the process exited:\n{process.output()}"
        try:
            result = check()
        except requests.ConnectionError:
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s:\n{process.output()}")


def test_every_procfile_line_starts_from_the_install(
    installed: Installed, redis_server, redis: Redis, tmp_path: Path, keys: Keys
) -> None:
    assert set(procfile()) == {"web", "worker", "clock", "release"}
    database = f"sqlite:///{tmp_path / 'host.sqlite3'}"
    port = free_port()
    env = installed.with_settings(
        DATABASE_URL=database,
        REDIS_URL=redis_server.url,
        RAMPWATCH_SWEEP_INTERVAL="0.2",
        RAMPWATCH_OPS_TOKEN=OPS,
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY="1",
        **alix_env(keys, "http://127.0.0.1:9"),
    )
    head = Revisions.load().heads

    # web, before the release phase: up, but not ready, and saying why.
    web = Process(installed.procfile_line("web"), cwd=installed.work, env=env, log=tmp_path / "web.log")
    try:
        base = f"http://127.0.0.1:{port}"
        health = wait_for(lambda: requests.get(f"{base}/healthz", timeout=2), "web /healthz", web)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ready = requests.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 503
        assert (
            ready.json()["checks"]["schema"] == f"at no revision, expected {head[0]}; run `rampwatch migrate`"
        )

        run(installed.procfile_line("release"), cwd=installed.work, env=env)
        ready = requests.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "status": "ready",
            "checks": {"redis": "ok", "database": "ok", "schema": "ok"},
        }

        clock = Process(
            installed.procfile_line("clock"), cwd=installed.work, env=env, log=tmp_path / "clock.log"
        )
        try:
            wait_for(lambda: redis.exists(f"rq:job:{SWEEP_JOB_ID}"), "the clock queues a sweep", clock)
        finally:
            assert clock.stop() == 0, clock.output()

        # A signed callback through the installed web lands on the stream...
        body = {"externalOrderId": "host-1", "type": "sell", "fiatAmount": 100000, "status": "SUCCESS"}
        body["signature"] = signing.sign(signing.response_fields(body), WEBHOOK_SECRET, keys.alix.private)
        accepted = requests.post(f"{base}/webhooks/alixpay", json=body, timeout=5)
        assert accepted.status_code == 200, accepted.text
        assert redis.xlen(STREAM) == 1
        # ...and the console's pages load from the installed package's templates.
        login = requests.get(f"{base}/console/login", timeout=5)
        assert login.status_code == 200 and 'name="csrf_token"' in login.text

        run(installed.procfile_line("worker", "--burst"), cwd=installed.work, env=env)
        job = Job.fetch(SWEEP_JOB_ID, connection=redis, serializer=JSONSerializer)
        assert job.get_status(refresh=True) == JobStatus.FINISHED
        # The installed worker drained the stream: the callback is applied.
        assert redis.xlen(STREAM) == 0
        with create_engine(database).connect() as conn:
            status = conn.execute(
                text("SELECT status FROM orders WHERE external_order_id = 'host-1'")
            ).scalar()
        assert status == "SUCCESS"
    finally:
        assert web.stop() == 0, web.output()
    assert "Booting worker" in web.output()
    # Readiness probes read the schema revision without logging Alembic's banner each time.
    assert "Context impl" not in web.output()
