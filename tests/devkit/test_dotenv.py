"""The dev stack's settings file: one ``NAME=value`` a line, quoted as needed, mode 0600,
and read back by a POSIX shell as the same values."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from devkit.dotenv import dotenv_line, write_dotenv


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("redis://127.0.0.1:6379/0", "X=redis://127.0.0.1:6379/0"),
        ("sqlite:////tmp/a b/db.sqlite3", "X='sqlite:////tmp/a b/db.sqlite3'"),
        ("2s,3s,5s", "X=2s,3s,5s"),
        ("pa$$word", "X='pa$$word'"),
        ("it's", 'X="it\'s"'),
        ("", "X="),
    ],
)
def test_values_are_quoted_only_as_needed(value: str, line: str) -> None:
    assert dotenv_line("X", value) == line


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("KEY", "-----BEGIN KEY-----\nabc", "line break"),
        ("KEY", "a\rb", "line break"),
        ("X", "it's $HOME", "unambiguously"),
        ("1X", "v", "not a variable name"),
        ("A-B", "v", "not a variable name"),
    ],
)
def test_what_cannot_be_written_is_refused(name: str, value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dotenv_line(name, value)


def test_the_file_is_private_replaced_whole_and_reads_back_in_a_shell(tmp_path: Path) -> None:
    path = tmp_path / "dev" / ".env"
    path.parent.mkdir()
    path.write_text("OLD=1\n")
    path.chmod(0o644)
    values = {
        "DATABASE_URL": "sqlite:////tmp/a b/db.sqlite3",
        "RAMPWATCH_API_TOKEN": "t0k-en_$HOME`x`",
        "NOTE": "it's fine",
        "ALIXPAY_PRIVATE_KEY": str(tmp_path / "key.pem"),
    }
    assert write_dotenv(path, values, ["written by a test"]) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert lines[0] == "# written by a test"
    assert [line.split("=", 1)[0] for line in lines[1:]] == list(values)
    assert not any(p.name != ".env" for p in path.parent.iterdir())  # no partial file left
    shown = subprocess.run(
        ["/bin/sh", "-c", f". {path}; " + "; ".join(f'printf "%s\\0" "${name}"' for name in values)],
        env={"PATH": os.environ["PATH"], "HOME": "/nowhere"},
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert shown.split("\0")[:-1] == list(values.values())
    assert "OLD" not in path.read_text()


def test_nothing_is_written_when_a_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    with pytest.raises(ValueError):
        write_dotenv(path, {"A": "fine", "B": "two\nlines"})
    assert not path.exists()


def test_make_run_links_its_dotenv_where_the_cli_reads_it(tmp_path: Path) -> None:
    from devkit.supervisor import link_dotenv

    dotenv = tmp_path / "var" / "dev" / ".env"
    dotenv.parent.mkdir(parents=True)
    dotenv.write_text("REDIS_URL=redis://127.0.0.1:1/0\n")
    assert (
        link_dotenv(tmp_path, dotenv) == ".env -> var/dev/.env: the rampwatch command reads it in this folder"
    )
    assert (tmp_path / ".env").read_text() == "REDIS_URL=redis://127.0.0.1:1/0\n"
    assert link_dotenv(tmp_path, dotenv) is None  # already there: nothing to say
    # A .env of one's own is never replaced.
    (tmp_path / ".env").unlink()
    (tmp_path / ".env").write_text("MINE=1\n")
    assert "kept your own .env" in (link_dotenv(tmp_path, dotenv) or "")
    assert (tmp_path / ".env").read_text() == "MINE=1\n"
    # A stack kept outside the checkout leaves the checkout alone.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert link_dotenv(elsewhere, dotenv) is None and not (elsewhere / ".env").exists()
