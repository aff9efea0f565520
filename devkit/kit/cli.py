"""Running one sandbox alone: ``python -m devkit.<slug> --help``.

Every sandbox's command line has the same shape: ``--port``, ``--callback-url``,
its own flags, ``--log-level``; it prints ``<name> sandbox listening on <url>``
once it listens, serves until SIGTERM or SIGINT, and exits 0 (2 when it cannot
listen or its arguments are refused). This module owns that shape
(``run_cli``) and the serve-until-signalled loop a supervisor can reuse.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devkit.kit.sandbox import SandboxKit


def serve_until_signalled(sandbox: SandboxKit) -> int:
    """Start ``sandbox``, print ``<name> sandbox listening on <url>``, serve until
    SIGTERM or SIGINT, stop. The exit code: 0, or 2 when it cannot listen."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            sandbox.start()
        except OSError as exc:
            print(f"{sandbox.name} sandbox: cannot listen on {sandbox.port}: {exc}", file=sys.stderr)
            return 2
        print(f"{sandbox.name} sandbox listening on {sandbox.url}", flush=True)
        while not stop.wait(0.5):
            continue
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def run_cli(
    name: str,
    argv: Sequence[str] | None,
    *,
    description: str,
    callback_help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    build: Callable[[argparse.Namespace], SandboxKit],
) -> int:
    """The ``main`` of ``python -m devkit.<name>``. Parses ``argv``: ``--port``,
    ``--callback-url`` (``callback_help``), the sandbox's own flags (``add_arguments``),
    ``--log-level``; sets up logging; ``build``s the sandbox from the parsed arguments
    (an OSError, ValueError or TypeError is printed as ``<name> sandbox: <error>`` and
    exits 2); then ``serve_until_signalled``."""
    parser = argparse.ArgumentParser(prog=f"python -m devkit.{name}", description=description)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--callback-url", default=None, help=callback_help)
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sandbox = build(args)
    except (OSError, ValueError, TypeError) as exc:
        print(f"{name} sandbox: {exc}", file=sys.stderr)
        return 2
    return serve_until_signalled(sandbox)
