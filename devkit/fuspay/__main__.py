"""``python -m devkit.fuspay``: see ``devkit.fuspay.cli``."""

from devkit.fuspay.cli import main

raise SystemExit(main())
