"""``python -m workers.cli``: the ``rampwatch`` command."""

from workers.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
