"""``python -m devkit.soak``: see ``devkit.soak.run``."""

from devkit.soak.run import main

raise SystemExit(main())
