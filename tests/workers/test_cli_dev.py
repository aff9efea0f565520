"""``rampwatch dev``: it loads the dev kit from the checkout it runs in, and only there.

The dev kit is not installed (not in the wheel, not exposed by the editable
install), so the command puts the working directory's ``devkit/`` on the path,
as ``python -m devkit`` would; elsewhere it exits 2 with one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RAMPWATCH = str(Path(sys.executable).parent / "rampwatch")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_in_a_checkout_it_runs_that_checkouts_supervisor(tmp_path: Path) -> None:
    devkit = tmp_path / "devkit"
    devkit.mkdir()
    (devkit / "__init__.py").write_text("")
    (devkit / "supervisor.py").write_text(
        "def main(exit_after_demo=False):\n"
        "    print(f'supervisor of {__file__}, exit_after_demo={exit_after_demo}')\n"
        "    return 7\n"
    )
    done = subprocess.run(
        [RAMPWATCH, "dev", "--exit-after-demo"], cwd=tmp_path, env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 7, done
    assert done.stdout.strip() == f"supervisor of {devkit / 'supervisor.py'}, exit_after_demo=True"


def test_outside_a_checkout_it_says_so_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run([RAMPWATCH, "dev"], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "rampwatch dev: runs from a checkout of rampwatch (the dev kit, devkit/, is not installed):"
        " cd into the checkout and run `make run`"
    ]
    assert list(tmp_path.iterdir()) == []
