"""``python -m devkit.alixpay``: see ``devkit.alixpay.cli``."""

from devkit.alixpay.cli import main

raise SystemExit(main())
