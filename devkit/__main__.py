"""``python -m devkit`` (what ``make run`` runs): the whole stack on this machine.

Parses the dev runner's few flags and hands over to ``devkit.supervisor``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from devkit import supervisor


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit",
        description="Run rampwatch locally: Redis, the provider sandboxes, every Procfile process, a demo.",
    )
    parser.add_argument("--exit-after-demo", action="store_true", help="stop once the demo orders are done")
    args = parser.parse_args(argv)
    return supervisor.main(exit_after_demo=args.exit_after_demo)


if __name__ == "__main__":
    raise SystemExit(main())
