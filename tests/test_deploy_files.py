"""The files a Procfile host reads besides the code: ``app.json``, ``.python-version``,
``config/example.env``, and the lint step of ``.ci/run``.

The settings are not listed by hand here: ``load_settings`` is run over a mapping
that records every name it asks for, so a setting added to ``config/settings.py``
and forgotten in ``app.json`` or ``example.env`` fails this test.
"""

from __future__ import annotations

import configparser
import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from config import ConfigError
from orders.providers import load_settings

ROOT = Path(__file__).resolve().parent.parent
ADDON_VARIABLES = {"DATABASE_URL": "heroku-postgresql", "REDIS_URL": "heroku-redis"}


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers every variable looked up in it."""

    def __init__(self, values: dict[str, str]):
        self.values = values
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def settings_read() -> set[str]:
    # One variable of each provider turns it on, so its loader asks for all of its settings.
    env = RecordingEnv({"ALIXPAY_PARTNER_CODE": "x", "FUSPAY_PARTNER_ID": "x", "CHANGELLY_API_KEY": "x"})
    with pytest.raises(ConfigError):
        load_settings(env, ROOT)
    return env.asked


@pytest.fixture(scope="module")
def app_json() -> dict:
    return json.loads((ROOT / "app.json").read_text(encoding="utf-8"))


def procfile_types() -> set[str]:
    lines = (ROOT / "Procfile").read_text(encoding="utf-8").splitlines()
    return {line.split(":", 1)[0] for line in lines if line.strip() and not line.startswith("#")}


def test_the_recorder_sees_the_settings() -> None:
    read = settings_read()
    # Positive controls: core settings, a _PREVIOUS twin and a per-provider tuning one.
    assert {"DATABASE_URL", "REDIS_URL", "REDIS_TLS_VERIFY", "RAMPWATCH_API_TOKEN"} <= read
    assert {"ALIXPAY_SECRET_KEY_PREVIOUS", "FUSPAY_POLL_BACKOFF", "CHANGELLY_TIMEOUT"} <= read
    assert len(read) >= 40


def test_app_json_lists_every_setting_with_a_description(app_json: dict) -> None:
    env = app_json["env"]
    assert set(env) == settings_read()
    for name, spec in env.items():
        assert isinstance(spec, dict), name
        assert len(spec.get("description", "")) >= 20, name
        assert isinstance(spec.get("required"), bool), name


def test_app_json_requires_only_what_a_deploy_cannot_do_without(app_json: dict) -> None:
    env = app_json["env"]
    required = {name for name, spec in env.items() if spec["required"]}
    assert required == {"RAMPWATCH_API_TOKEN"}
    # Generated, so a one-click deploy has a token at once.
    assert env["RAMPWATCH_API_TOKEN"]["generator"] == "secret"


def test_the_addons_provide_the_database_and_redis(app_json: dict) -> None:
    plans = {(a["plan"] if isinstance(a, dict) else a).split(":")[0] for a in app_json["addons"]}
    assert plans == set(ADDON_VARIABLES.values())
    for name, addon in ADDON_VARIABLES.items():
        spec = app_json["env"][name]
        # A value here would collide with the variable the add-on sets.
        assert "value" not in spec and "generator" not in spec and spec["required"] is False
        assert addon in spec["description"]
    # Heroku Redis presents a self-signed certificate: the deploy accepts it explicitly.
    assert app_json["env"]["REDIS_TLS_VERIFY"]["value"] == "none"


def test_formation_runs_each_procfile_process_and_exactly_one_clock(app_json: dict) -> None:
    formation = app_json["formation"]
    assert set(formation) == procfile_types() - {"release"}
    assert formation["clock"]["quantity"] == 1
    assert formation["web"]["quantity"] >= 1 and formation["worker"]["quantity"] >= 1


def test_migrations_run_in_the_release_phase_not_postdeploy(app_json: dict) -> None:
    lines = (ROOT / "Procfile").read_text(encoding="utf-8").splitlines()
    assert "release: rampwatch migrate" in lines
    # postdeploy runs once, after an app is first created: never the place for migrations.
    assert "postdeploy" not in app_json.get("scripts", {})


def test_python_version_is_one_the_package_supports() -> None:
    pinned = (ROOT / ".python-version").read_text(encoding="utf-8").strip()
    assert re.fullmatch(r"3\.\d+", pinned), pinned
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    minimum = cfg["options"]["python_requires"].removeprefix(">=")
    assert tuple(map(int, pinned.split("."))) >= tuple(map(int, minimum.split(".")))
    assert f"Programming Language :: Python :: {pinned}" in cfg["metadata"]["classifiers"]


def test_example_env_names_every_setting() -> None:
    text = (ROOT / "config" / "example.env").read_text(encoding="utf-8")
    # Set or commented out ("# NAME="), every variable appears.
    named = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert named == settings_read()


def test_readme_settings_table_names_the_tls_setting() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "| `REDIS_TLS_VERIFY` | `required` |" in readme


def test_ci_runs_lint_and_format_checks_before_the_tests() -> None:
    dry = subprocess.run(["make", "-n", "lint"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert re.search(r"ruff check \.$", dry, flags=re.MULTILINE), dry
    assert re.search(r"ruff format --check \.$", dry, flags=re.MULTILINE), dry
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()]
    assert ci.index("make lint") < ci.index("make test")
