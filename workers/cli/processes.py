"""The long-running processes and set-up: ``migrate``, ``worker``, ``clock``, ``dev``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from config.logs import configure_logging
from workers.cli.common import Failure, Runtime, pass_runtime

if TYPE_CHECKING:
    from redis import Redis

    from config import Settings


def _check_redis_tls(redis: Redis) -> None:
    """Stop with one line naming REDIS_TLS_VERIFY, not a traceback, when the
    ``rediss://`` certificate does not verify."""
    from workers.queue import RedisTLSVerifyFailed, check_tls_at_start

    try:
        check_tls_at_start(redis)
    except RedisTLSVerifyFailed as exc:
        # One line as the processes have always said it (log scanners match it).
        raise Failure(str(exc), code=2, where="rampwatch") from exc


def _process_logging(settings: Settings, component: str) -> None:
    from config.errors import init_error_reporting

    configure_logging(settings.log_level, settings.log_format)
    init_error_reporting(settings, component)


@click.command()
@pass_runtime
def migrate(rt: Runtime) -> None:
    """Bring the database to the newest schema (creates a SQLite file); the Procfile's release."""
    from orders.migrate import upgrade

    upgrade(rt.settings.database_url)
    click.echo(f"database {rt.settings.safe_database_url} is at the newest schema")


@click.command()
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.option("--name", help="Worker name (default: RQ's).")
@pass_runtime
def worker(rt: Runtime, burst: bool, name: str | None) -> None:
    """Run an RQ worker on the control, events, polls and notifications queues."""
    from workers.outages import Patience
    from workers.services import WORKER_REDIS_TIMEOUT, build_services
    from workers.worker import run_worker

    settings = rt.settings
    _process_logging(settings, "worker")
    services = build_services(settings, redis_timeout=WORKER_REDIS_TIMEOUT, patience=Patience("worker"))
    _check_redis_tls(services.redis)
    run_worker(services, burst=burst, name=name)


@click.command()
@pass_runtime
def clock(rt: Runtime) -> None:
    """Queue the sweep every RAMPWATCH_SWEEP_INTERVAL. Run exactly one: a second waits
    on standby and takes over if the first stops."""
    import threading

    from workers.clock import Clock
    from workers.outages import Patience, connect_patient
    from workers.queue import Queues

    settings = rt.settings
    _process_logging(settings, "clock")
    stop = threading.Event()  # set by SIGTERM: the clock stops, and so does any wait for Redis
    redis = connect_patient(
        settings.redis_url, Patience("clock", stop), timeout=5, tls_verify=settings.redis_tls_verify
    )
    _check_redis_tls(redis)
    ticker = Clock(redis, Queues(redis), settings.sweep_interval, stop)
    ticker.install_signal_handlers()
    ticker.run()


@click.command()
@click.option("--exit-after-demo", is_flag=True, help="Stop once the demo orders are done.")
@click.pass_context
def dev(ctx: click.Context, exit_after_demo: bool) -> None:
    """Run everything locally with the provider sandboxes (make run).

    The dev kit is not part of the product (not in the wheel): it is imported here
    only, from the checkout the command runs in (put first on the path, as
    python -m devkit would), and its absence is one line, not a traceback."""
    checkout = Path.cwd()
    if (checkout / "devkit" / "__init__.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        from devkit.supervisor import main as dev_main
    except ModuleNotFoundError as exc:
        if exc.name != "devkit":
            raise
        raise Failure(
            "runs from a checkout of rampwatch (the dev kit, devkit/, is not"
            " installed): cd into the checkout and run `make run`",
            code=2,
        ) from exc
    ctx.exit(dev_main(exit_after_demo=exit_after_demo))
