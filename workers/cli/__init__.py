"""The ``rampwatch`` command (click): processes, operator tools and dev tooling.

One module per command group: ``processes`` (migrate, worker, clock, dev),
``orders`` (list, show, create), ``reconcile`` (reconcile, backfill, replay),
``anomalies``, ``dlq``, ``notifications``, ``keys``, ``simulate``, ``export``;
what they share (settings, the database opened with clean errors, output, the exit
policy) is in ``common``. Every command reads the settings once and fails with one
line, never a traceback, for anything an operator can fix; see ``common``.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from workers.cli.anomalies import anomalies
from workers.cli.common import EXIT_BROKEN_PIPE, RampwatchGroup, Runtime, silence_stdout
from workers.cli.dlq import dlq
from workers.cli.export import export
from workers.cli.keys import keys
from workers.cli.notifications import notifications
from workers.cli.orders import orders
from workers.cli.processes import clock, dev, migrate, worker
from workers.cli.reconcile import backfill, reconcile, replay
from workers.cli.simulate import simulate

__all__ = ["cli", "main"]

EXIT_INTERRUPTED = 130


@click.group("rampwatch", cls=RampwatchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rampwatch", prog_name="rampwatch")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """rampwatch: webhook receiver and order reconciler for crypto off-ramp providers.

    Settings come from the environment (and a .env file in the working directory);
    see the README. Every listing takes --json.
    """
    if not isinstance(ctx.obj, Runtime):
        ctx.obj = Runtime()
        ctx.call_on_close(ctx.obj.close)


for command in (
    migrate,
    worker,
    clock,
    orders,
    reconcile,
    backfill,
    replay,
    anomalies,
    dlq,
    notifications,
    export,
    keys,
    simulate,
    dev,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rampwatch`` with ``argv`` (default: the process's); the exit code."""
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None, prog_name="rampwatch", standalone_mode=False
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        silence_stdout()
        return EXIT_BROKEN_PIPE
    return code if isinstance(code, int) else 0
