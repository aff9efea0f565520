"""The ``rampwatch`` command: migrate, worker, clock, reconcile, orders, dev.

Every sub-command reads the settings once (``orders.providers.load_settings``) and exits
non-zero with every problem listed when they are invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from config import ConfigError, Settings
from config.logs import configure_logging

if TYPE_CHECKING:
    from redis import Redis


def _settings() -> Settings:
    try:
        from orders.providers import load_settings

        return load_settings()
    except ConfigError as exc:
        print(f"rampwatch: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def _check_redis_tls(redis: Redis) -> None:
    """Stop with one line naming REDIS_TLS_VERIFY, not a traceback, when the
    ``rediss://`` certificate does not verify."""
    from workers.queue import RedisTLSVerifyFailed, check_tls_at_start

    try:
        check_tls_at_start(redis)
    except RedisTLSVerifyFailed as exc:
        print(f"rampwatch: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def cmd_migrate(args: argparse.Namespace) -> int:
    from orders.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    print(f"database {settings.safe_database_url} is at the newest schema")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.outages import Patience
    from workers.services import WORKER_REDIS_TIMEOUT, build_services
    from workers.worker import run_worker

    settings = _settings()
    configure_logging(settings.log_level)
    services = build_services(settings, redis_timeout=WORKER_REDIS_TIMEOUT, patience=Patience("worker"))
    _check_redis_tls(services.redis)
    run_worker(services, burst=args.burst, name=args.name)
    return 0


def cmd_clock(args: argparse.Namespace) -> int:
    import threading

    from workers.clock import Clock
    from workers.outages import Patience, connect_patient
    from workers.queue import Queues

    settings = _settings()
    configure_logging(settings.log_level)
    stop = threading.Event()  # set by SIGTERM: the clock stops, and so does any wait for Redis
    redis = connect_patient(
        settings.redis_url, Patience("clock", stop), timeout=5, tls_verify=settings.redis_tls_verify
    )
    _check_redis_tls(redis)
    clock = Clock(redis, Queues(redis), settings.sweep_interval, stop)
    clock.install_signal_handlers()
    clock.run()
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from orders.errors import RampwatchError
    from workers import jobs
    from workers.services import build_services

    settings = _settings()
    configure_logging("WARNING")
    rt = build_services(settings)
    rt.install()
    if args.order and not args.provider:
        print("rampwatch reconcile: --order needs --provider", file=sys.stderr)
        return 2
    if args.provider and args.provider not in rt.adapters:
        print(f"rampwatch reconcile: provider {args.provider} is not configured", file=sys.stderr)
        return 2
    if args.order:
        targets = [(args.provider, args.order)]
    elif args.all_open or args.provider:
        targets = [(o.provider, o.external_order_id) for o in rt.store.open_orders(args.provider)]
        targets = [t for t in targets if t[0] in rt.adapters]
    else:
        print("rampwatch reconcile: give --order, --provider or --all-open", file=sys.stderr)
        return 2
    failures = 0
    for provider, order_id in targets:
        if args.enqueue:
            queued = rt.queues.enqueue_poll(provider, order_id, reason="cli")
            print(f"{provider} {order_id}: {'poll queued' if queued else 'poll already queued'}")
            continue
        try:
            if args.dry_run:
                event = rt.adapter(provider).poll(order_id)
                print(
                    f"{provider} {order_id}: provider says {event.provider_status} (dry run, nothing applied)"
                )
            else:
                result = jobs.poll_order(provider, order_id, reason="cli")
                if result.get("deferred"):
                    print(
                        f"{provider} {order_id}: another poll of it is under way; one more is {result['queued']}"
                    )
                    continue
                print(
                    f"{provider} {order_id}: provider says {result['provider_status']} -> "
                    f"{result['decision']}; now {result['status']} v{result['version']}"
                )
        except RampwatchError as exc:
            failures += 1
            print(f"{provider} {order_id}: FAILED {type(exc).__name__}: {exc}")
    print(f"{len(targets)} order(s), {failures} failure(s)")
    return 1 if failures else 0


def _when(text: str) -> datetime:
    """An ISO date or date-time; a naive one is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or date-time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_backfill(args: argparse.Namespace) -> int:
    """Fetch a provider's orders by date range and apply them (adopting unknown ones)."""
    from collections import Counter

    from orders.errors import RampwatchError
    from orders.providers.base import BackfillingAdapter
    from workers.services import build_services

    settings = _settings()
    configure_logging("WARNING")
    rt = build_services(settings)
    adapter = rt.adapters.get(args.provider)
    if adapter is None:
        print(f"rampwatch backfill: provider {args.provider} is not configured", file=sys.stderr)
        return 2
    if not isinstance(adapter, BackfillingAdapter):
        print(f"rampwatch backfill: {args.provider} has no order-list API to backfill from", file=sys.stderr)
        return 2
    if args.until and args.until <= args.since:
        print("rampwatch backfill: --until must be after --since", file=sys.stderr)
        return 2
    seen: Counter[str] = Counter()
    batch = []
    try:
        for event in adapter.backfill(args.since, args.until):
            seen["orders"] += 1
            if args.dry_run:
                known = rt.store.exists(args.provider, event.external_order_id)
                print(
                    f"{event.external_order_id}: {event.provider_status}{'' if known else ' (unknown to us)'}"
                )
                continue
            seen["adopted"] += 0 if rt.store.exists(args.provider, event.external_order_id) else 1
            batch.append(event)
            if len(batch) >= 100:
                seen.update(o.decision.value for o in rt.store.apply(batch))
                batch.clear()
        if batch:
            seen.update(o.decision.value for o in rt.store.apply(batch))
    except RampwatchError as exc:
        print(f"rampwatch backfill: stopped after {seen['orders']} order(s): {type(exc).__name__}: {exc}")
        return 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))
    print(f"backfill {args.provider}: {summary or 'no orders'}{' (dry run)' if args.dry_run else ''}")
    return 0


def cmd_orders_show(args: argparse.Namespace) -> int:
    from orders.db import make_engine
    from orders.providers import STATUS_MAPS
    from orders.store import Store
    from orders.views import order_dict, timeline_text

    settings = _settings()
    store = Store(make_engine(settings.database_url), STATUS_MAPS, {})
    order = store.order_view(args.provider, args.external_order_id)
    if order is None:
        print(f"no {args.provider} order {args.external_order_id}", file=sys.stderr)
        return 1
    view = order_dict(order, raw_bodies=args.raw)
    print(json.dumps(view, indent=2) if args.json else timeline_text(view))
    return 0


def cmd_orders_create(args: argparse.Namespace) -> int:
    from orders.errors import RampwatchError
    from orders.service import create_order
    from workers.services import build_services

    settings = _settings()
    rt = build_services(settings)
    try:
        request = json.loads(args.request)
    except ValueError:
        print("rampwatch orders create: the request is not JSON", file=sys.stderr)
        return 2
    try:
        outcome = create_order(rt.store, rt.adapter(args.provider), request)
    except RampwatchError as exc:
        print(f"rampwatch orders create: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.provider} {outcome.event.external_order_id}: {outcome.status.value} (v{outcome.version})")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    """``make run``. The dev kit is not part of the product (not in the wheel): it is
    imported here only, from the checkout the command runs in (put first on the path,
    as ``python -m devkit`` would), and its absence is one line, not a traceback."""
    from pathlib import Path

    checkout = Path.cwd()
    if (checkout / "devkit" / "__init__.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        from devkit.supervisor import main as dev_main
    except ModuleNotFoundError as exc:
        if exc.name != "devkit":
            raise
        print(
            "rampwatch dev: runs from a checkout of rampwatch (the dev kit, devkit/, is not"
            " installed): cd into the checkout and run `make run`",
            file=sys.stderr,
        )
        return 2
    return dev_main(exit_after_demo=args.exit_after_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rampwatch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="bring the database to the newest schema")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("worker", help="run an RQ worker (events, polls, control queues)")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument("--name", help="worker name (default: RQ's)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("clock", help="enqueue the sweep on an interval (run exactly one)")
    p.set_defaults(func=cmd_clock)

    p = sub.add_parser("reconcile", help="poll providers for orders and apply what they say")
    p.add_argument("--provider", help="provider slug, e.g. alixpay")
    p.add_argument("--order", help="one external order id (needs --provider)")
    p.add_argument("--all-open", action="store_true", help="every open order of every enabled provider")
    p.add_argument("--dry-run", action="store_true", help="ask the provider, apply nothing")
    p.add_argument("--enqueue", action="store_true", help="queue the polls for the workers instead")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("backfill", help="fetch a provider's orders by date range and apply them")
    p.add_argument("--provider", required=True, help="provider slug, e.g. changelly")
    p.add_argument("--since", required=True, type=_when, help="ISO date or date-time (UTC if no zone)")
    p.add_argument("--until", type=_when, help="ISO date or date-time (default: now)")
    p.add_argument("--dry-run", action="store_true", help="list what the provider has, apply nothing")
    p.set_defaults(func=cmd_backfill)

    orders = sub.add_parser("orders", help="inspect and create orders")
    osub = orders.add_subparsers(dest="orders_command", required=True)
    p = osub.add_parser("show", help="an order and its event timeline")
    p.add_argument("provider")
    p.add_argument("external_order_id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--raw", action="store_true", help="include raw bodies (personal data!)")
    p.set_defaults(func=cmd_orders_show)
    p = osub.add_parser("create", help="create an order at a provider")
    p.add_argument("provider")
    p.add_argument("request", help="the create request as JSON")
    p.set_defaults(func=cmd_orders_create)

    p = sub.add_parser("dev", help="run everything locally with the sandboxes (make run)")
    p.add_argument("--exit-after-demo", action="store_true", help="stop once the demo orders are done")
    p.set_defaults(func=cmd_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
