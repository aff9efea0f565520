"""``python -m devkit`` (what ``make run`` runs): the whole stack on this machine.

Parses the dev runner's few flags and hands over to ``devkit.supervisor``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from devkit import supervisor


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit",
        description="Run rampwatch locally: Redis, the provider sandboxes, every Procfile process, a demo.",
    )
    parser.add_argument("--exit-after-demo", action="store_true", help="stop once the demo orders are done")
    parser.add_argument(
        "--no-demo", action="store_true", help="start the stack and serve, without demo orders"
    )
    parser.add_argument(
        "--var",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the stack keeps its SQLite database, keys and .env (default: var/ in the checkout)",
    )
    args = parser.parse_args(argv)
    return supervisor.main(exit_after_demo=args.exit_after_demo, demo=not args.no_demo, var=args.var)


if __name__ == "__main__":
    raise SystemExit(main())
