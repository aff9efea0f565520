"""The settings of a running dev stack, written as a dotenv file for a second shell.

``make run`` wires URLs, an API token and key files into its processes; a
second shell needs the same settings to run ``rampwatch orders show`` and the
like. This module writes them as ``NAME=value`` lines, one variable a line,
mode 0600 (the file holds the stack's secrets), replacing the file whole. A
value is written bare when it is plain, else in single quotes (literal to a
POSIX shell and to dotenv readers alike, no ``$`` expansion), else in double
quotes when that means the same to both; a value with a line break is
refused: multi-line values (keys) are passed as file paths instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]*")


def dotenv_line(name: str, value: str) -> str:
    """``NAME=value`` with ``value`` quoted as it needs; ValueError when it cannot be written."""
    if not NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a variable name")
    if any(c in value for c in "\n\r\0"):
        raise ValueError(f"{name}: a value with a line break cannot be written; pass a file path")
    if PLAIN.fullmatch(value):
        return f"{name}={value}"
    if "'" not in value:
        return f"{name}='{value}'"
    if not any(c in value for c in '$`\\"'):
        return f'{name}="{value}"'
    raise ValueError(f"{name}: a value with both ' and one of $ ` \\ \" cannot be written unambiguously")


def write_dotenv(path: Path, values: Mapping[str, str], comments: Iterable[str] = ()) -> Path:
    """Write ``values`` to ``path`` (folders made, mode 0600, replaced at once); ``path``.
    Every line is checked before anything is written."""
    lines = [f"# {comment}" for comment in comments]
    lines += [dotenv_line(name, value) for name, value in values.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover partial file keeps its old mode otherwise
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(partial, path)
    return path
