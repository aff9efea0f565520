"""``python -m devkit.changelly``: see ``devkit.changelly.cli``."""

from devkit.changelly.cli import main

raise SystemExit(main())
