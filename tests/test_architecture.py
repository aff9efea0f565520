"""Imports run one way: ``config <- orders <- {receiver, workers}``, and the dev kit apart.

An AST walk over every ``.py`` file of the four product packages and of ``devkit``,
including imports made inside functions and ``importlib.import_module("...")``
calls with a literal name:

* ``config`` imports nothing from ``orders``, ``receiver`` or ``workers``;
* ``orders`` imports nothing from ``receiver`` or ``workers``, and never ``flask`` or ``rq``;
* ``workers`` never imports ``receiver``;
* ``receiver`` imports from ``workers`` only ``workers.queue`` and ``workers.stream`` (to
  enqueue), ``workers.services`` (the one function that builds every process's
  collaborators) and ``workers.deadletters`` (the console lists failed work as the CLI does);
* nothing outside ``receiver/`` imports ``receiver``;
* no product module imports ``devkit`` (it is not in the wheel), except the imports
  listed in ``DEVKIT_LOADERS``, each made inside the one function named there;
* ``devkit`` may import ``config`` and ``orders`` (a sandbox signs with the code that
  verifies), never ``receiver`` or ``workers``: it runs them as processes, as a host does;
* only ``config/`` reads the environment (``os.environ``, ``os.getenv``, ...), with the
  exemptions listed in ``ENV_EXEMPT``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("config", "orders", "receiver", "workers")
PACKAGES = (*PRODUCT, "devkit")

# The only product code that may import devkit: (file, enclosing function) -> reason.
DEVKIT_LOADERS = {
    ("workers/cli/processes.py", "dev"): "`rampwatch dev` loads the dev kit lazily, from a checkout",
}

# Files outside config/ allowed to touch the environment, each with its reason.
# (devkit/localredis.py was checked: it does not read the environment, so it is not listed.)
ENV_EXEMPT = {
    "devkit/supervisor.py": "the `make run` supervisor (developer machines only) copies the "
    "environment and adds settings for the child processes it starts",
}
RECEIVER_MAY_USE = ("workers.queue", "workers.stream", "workers.services", "workers.deadletters")
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name
    line: int
    from_base: bool = False  # the X of "from X import names" (the names are recorded apart)
    function: str | None = None  # the innermost function it is made in; None: module level


@dataclass
class Parsed:
    rel: str  # "orders/store.py"
    module: str  # "orders.store"
    imports: list[Import]
    env_reads: list[int]  # line numbers


def module_name(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, name] if name else base)


def parse_source(source: str, rel: str) -> Parsed:
    module = module_name(rel)
    is_package = rel.endswith("__init__.py")
    tree = ast.parse(source, filename=rel)
    imports: list[Import] = []
    env_reads: list[int] = []
    os_aliases = set()
    functions = [
        (node.lineno, node.end_lineno or node.lineno, node.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]

    def enclosing(line: int) -> str | None:
        around = [(start, name) for start, end, name in functions if start <= line <= end]
        return max(around)[1] if around else None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imports.append(Import(alias.name, node.lineno))
                if alias.name == "os":
                    os_aliases.add(alias.asname or "os")
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve_relative(module, is_package, node.level, node.module)
                if node.level
                else node.module or ""
            )
            for alias in node.names:
                # "from workers import queue" imports workers.queue; "from x import name"
                # imports x (and maybe x.name): record both so either rule can see it.
                imports.append(Import(base, node.lineno, from_base=True))
                if alias.name != "*":
                    imports.append(Import(f"{base}.{alias.name}", node.lineno))
            if base == "os" and any(a.name in ENV_NAMES for a in node.names):
                env_reads.append(node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            dotted = (
                f"{func.value.id}.{func.attr}"
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            if dotted in ("importlib.import_module", "import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    imports.append(Import(arg.value, node.lineno))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in os_aliases
            and node.attr in ENV_NAMES
        ):
            env_reads.append(node.lineno)
    imports = [Import(i.module, i.line, i.from_base, enclosing(i.line)) for i in imports]
    return Parsed(rel, module, imports, sorted(set(env_reads)))


def _is(module: str, *roots: str) -> bool:
    return any(module == r or module.startswith(r + ".") for r in roots)


def violations(files: list[Parsed]) -> list[str]:
    out = []
    for f in files:
        pkg = f.rel.split("/", 1)[0]
        for imp in f.imports:
            where = f"{f.rel}:{imp.line} imports {imp.module}"
            if pkg == "config" and _is(imp.module, "orders", "receiver", "workers"):
                out.append(f"{where} (config imports no other package)")
            if pkg == "orders" and _is(imp.module, "receiver", "workers"):
                out.append(f"{where} (orders is below receiver and workers)")
            if pkg == "orders" and _is(imp.module, "flask", "rq"):
                out.append(f"{where} (orders is the domain: no Flask, no RQ)")
            if pkg == "workers" and _is(imp.module, "receiver"):
                out.append(f"{where} (workers never imports receiver)")
            if (
                pkg == "receiver"
                and _is(imp.module, "workers")
                and not (imp.module == "workers" and imp.from_base)
                and not _is(imp.module, *RECEIVER_MAY_USE)
            ):
                out.append(f"{where} (receiver may use only {', '.join(RECEIVER_MAY_USE)})")
            if pkg != "receiver" and _is(imp.module, "receiver"):
                out.append(f"{where} (nothing outside receiver/ imports receiver)")
            if pkg in PRODUCT and _is(imp.module, "devkit") and (f.rel, imp.function) not in DEVKIT_LOADERS:
                out.append(f"{where} (the product never imports the dev kit)")
            if pkg == "devkit" and _is(imp.module, "workers"):
                out.append(f"{where} (devkit runs workers as processes; it imports config and orders only)")
        if f.env_reads and pkg != "config" and f.rel not in ENV_EXEMPT:
            out.append(f"{f.rel}:{f.env_reads} reads the environment (only config/ may)")
    return out


def _collect() -> list[Parsed]:
    files = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            files.append(parse_source(path.read_text(encoding="utf-8"), rel))
    return files


@pytest.fixture(scope="module")
def parsed() -> list[Parsed]:
    return _collect()


# --------------------------------------------------------------------------- the rules, on the code


def test_the_walk_is_not_vacuous(parsed: list[Parsed]) -> None:
    by_pkg = {pkg: [f for f in parsed if f.rel.startswith(pkg + "/")] for pkg in PACKAGES}
    assert len(parsed) >= 30, [f.rel for f in parsed]
    assert len(by_pkg["config"]) >= 2
    assert len(by_pkg["orders"]) >= 12
    assert len(by_pkg["receiver"]) >= 4
    assert len(by_pkg["workers"]) >= 5
    assert len(by_pkg["devkit"]) >= 8
    assert sum(len(f.imports) for f in parsed) >= 150
    # Known edges are seen, so the extraction works (positive controls).
    modules = {f.rel: {i.module for i in f.imports} for f in parsed}
    assert "orders.states" in modules["orders/store.py"]
    assert "config" in modules["orders/store.py"]
    assert "workers.services" in modules["receiver/__init__.py"]
    assert "flask" in modules["receiver/__init__.py"]
    assert "orders.providers.alixpay.signing" in modules["orders/providers/alixpay/client.py"]
    assert "rq" in modules["workers/queue.py"]
    assert "receiver" in modules["receiver/wsgi.py"]
    # Imports inside functions count too (the CLI imports lazily).
    assert any(_is(m, "workers.services") for m in modules["workers/cli/common.py"])
    # The dev kit's use of the product is seen, and the product's one lazy loader of it.
    assert "orders.providers.alixpay.signing" in modules["devkit/alixpay/sandbox.py"]
    assert "config" in modules["devkit/alixpay/sandbox.py"]
    loaders = {(f.rel, i.function) for f in parsed for i in f.imports if _is(i.module, "devkit")}
    assert {key for key in loaders if not key[0].startswith("devkit/")} == set(DEVKIT_LOADERS)
    # The environment reader is seen.
    assert {f.rel for f in parsed if f.env_reads} >= {"config/settings.py"}


def test_imports_run_one_way(parsed: list[Parsed]) -> None:
    assert violations(parsed) == []


def test_only_config_reads_the_environment(parsed: list[Parsed]) -> None:
    readers = {f.rel for f in parsed if f.env_reads}
    assert {r for r in readers if not r.startswith("config/")} <= set(ENV_EXEMPT)


def test_env_exemptions_are_real_and_still_needed(parsed: list[Parsed]) -> None:
    by_rel = {f.rel: f for f in parsed}
    for rel, reason in ENV_EXEMPT.items():
        assert reason.strip()
        assert rel in by_rel, f"exempted file {rel} does not exist: drop its exemption"
        assert by_rel[rel].env_reads, f"{rel} no longer reads the environment: drop its exemption"


# --------------------------------------------------------------------------- the checker catches breaches


@pytest.mark.parametrize(
    ("rel", "source"),
    [
        ("config/settings.py", "from orders.states import Status\n"),
        ("config/x.py", "import workers.queue\n"),
        ("config/x.py", "def f():\n    from receiver import create_app\n"),
        ("orders/store.py", "from workers.queue import Queues\n"),
        ("orders/x.py", "import flask\n"),
        ("orders/x.py", "from flask import request\n"),
        ("orders/x.py", "from rq import Queue\n"),
        ("orders/x.py", "import rq.job\n"),
        ("orders/providers/x.py", "from receiver.errors import Forbidden\n"),
        ("workers/jobs.py", "from receiver import webhooks\n"),
        ("workers/x.py", "import importlib\nimportlib.import_module('receiver.api')\n"),
        ("receiver/api.py", "from workers.jobs import poll_order\n"),
        ("receiver/api.py", "from workers import jobs\n"),
        ("receiver/api.py", "import workers.cli\n"),
        ("orders/x.py", "import os\nos.environ.get('X')\n"),
        ("orders/x.py", "import os\nos.getenv('X')\n"),
        ("workers/x.py", "from os import environ\n"),
        ("receiver/x.py", "import os as o\no.environ['X']\n"),
        ("devkit/localredis.py", "import os\nos.environ.get('REDIS_URL')\n"),
        ("orders/x.py", "import devkit\n"),
        ("config/x.py", "from devkit.kit import compact\n"),
        ("workers/cli.py", "from devkit.supervisor import main\n"),
        ("workers/cli.py", "def cmd_worker(args):\n    from devkit import supervisor\n"),
        ("workers/jobs.py", "def cmd_dev(args):\n    import devkit.supervisor\n"),
        ("receiver/x.py", "import importlib\nimportlib.import_module('devkit.alixpay')\n"),
        ("devkit/x.py", "from receiver import create_app\n"),
        ("devkit/x.py", "from workers.queue import Queues\n"),
        ("devkit/x.py", "import workers.cli\n"),
        ("orders/x.py", "from flask.json import dumps\n"),
        ("receiver/api.py", "import workers\n"),
    ],
)
def test_the_checker_flags_a_breach(rel: str, source: str) -> None:
    assert violations([parse_source(source, rel)]), source


@pytest.mark.parametrize(
    ("rel", "source"),
    [
        ("orders/store.py", "from config import PollPolicy\nfrom orders.states import Status\n"),
        ("receiver/__init__.py", "from workers.queue import Queues\nfrom receiver import api\n"),
        ("receiver/api.py", "from workers import queue\n"),
        ("workers/cli.py", "from config import load_settings\nfrom orders.store import Store\n"),
        ("config/settings.py", "import os\nos.environ.get('X')\n"),
        ("devkit/supervisor.py", "import os\nenv = dict(os.environ)\n"),
        ("workers/cli/processes.py", "def dev(ctx):\n    from devkit.supervisor import main\n"),
        (
            "devkit/alixpay/sandbox.py",
            "from config import Named\nfrom orders.providers.alixpay import signing\n",
        ),
        ("devkit/kit/cli.py", "import argparse\nfrom devkit.kit import keys\n"),
        ("orders/x.py", "import os\nos.path.join('a', 'b')\nos.access('a', os.X_OK)\n"),
    ],
)
def test_the_checker_allows_what_the_design_allows(rel: str, source: str) -> None:
    assert violations([parse_source(source, rel)]) == []


def test_relative_imports_are_resolved() -> None:
    source = "from . import signing\nfrom ..base import X\nfrom ... import states\n"
    p = parse_source(source, "orders/providers/alixpay/client.py")
    modules = {i.module for i in p.imports}
    assert {"orders.providers.alixpay.signing", "orders.providers.base", "orders.states"} <= modules
    p = parse_source("from . import api\n", "receiver/__init__.py")
    assert "receiver.api" in {i.module for i in p.imports}
