"""``make run`` (``python -m devkit``): the whole service on one machine, with the sandboxes.

It uses ``REDIS_URL`` when set, else starts a private Redis (``devkit.localredis``);
``DATABASE_URL`` when set, else SQLite under ``var/``. Each provider's
``devkit/<slug>/demo.py`` starts its sandbox with key pairs kept under
``var/dev/`` and says which settings reach it; the supervisor writes the
stack's settings to ``var/dev/.env`` for a second shell, runs the Procfile's
``release`` line, then its ``web``, ``worker`` and ``clock`` lines as real
processes, runs the demo (``devkit.demo``) and keeps serving until Ctrl-C (or
SIGTERM), or stops after the demo (``--exit-after-demo``). Unless ``NOTIFY_URL``
is set, a demo partner (``devkit.partner``) started before the processes receives
and verifies the notifications, signed with a ``NOTIFY_SECRET`` made for the run.
On the way out it stops the processes first, then the demo partner and the
sandboxes, then the Redis they used, and exits 0. This module owns that order; it reads and extends the environment for
its children (an exemption from "only config/ reads the environment", named in
the architecture test).
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devkit.alixpay import demo as alixpay_demo
from devkit.changelly import demo as changelly_demo
from devkit.demo import print_howto, run_demo
from devkit.dotenv import write_dotenv
from devkit.fuspay import demo as fuspay_demo
from devkit.kit import SandboxKit
from devkit.localredis import NoRedisServer, PrivateRedis, free_port
from devkit.partner import DemoPartner, new_secret
from devkit.processes import ProcessGroup, read_procfile, wait_ready
from devkit.stack import Scenario, Starter, say

CHECKOUT = Path(__file__).resolve().parent.parent  # the Procfile is here, and var/ by default
PROVIDERS: dict[str, Starter] = {
    "alixpay": alixpay_demo.start,
    "fuspay": fuspay_demo.start,
    "changelly": changelly_demo.start,
}
# rampwatch's own settings (config/), written to the .env when the stack has them.
CORE_SETTINGS = (
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_TLS_VERIFY",
    "RAMPWATCH_API_TOKEN",
    "RAMPWATCH_OPS_TOKEN",
    "RAMPWATCH_LOG_LEVEL",
    "RAMPWATCH_SWEEP_INTERVAL",
    "RAMPWATCH_SWEEP_BATCH",
    "RAMPWATCH_POLL_LEASE",
    "NOTIFY_URL",
    "NOTIFY_SECRET",
    "NOTIFY_SECRET_PREVIOUS",
    "NOTIFY_TIMEOUT",
    "NOTIFY_MAX_ATTEMPTS",
    "NOTIFY_BACKOFF",
)
PROCESSES = ("web", "worker", "clock")
NOTIFY_WAIT = 20.0  # seconds the demo waits for the partner to be told of every order's SUCCESS


@contextmanager
def _interruptible() -> Iterator[threading.Event]:
    """An event set by SIGINT (Ctrl-C) or SIGTERM, for the whole run: an interruption is
    an orderly stop, never a KeyboardInterrupt in the middle of a step."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def link_dotenv(root: Path, dotenv: Path) -> str | None:
    """Make ``root/.env`` (what the ``rampwatch`` CLI reads in the working directory)
    point at the stack's ``dotenv`` when that lives inside ``root``; what to tell the
    user, or None when there is nothing to say. A ``.env`` of the user's own is
    never replaced."""
    try:
        target = dotenv.resolve().relative_to(root.resolve())
    except ValueError:
        return None  # the stack keeps its files elsewhere (tests, --var): leave the checkout alone
    link = root / ".env"
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return None
    if link.exists() or link.is_symlink():
        return f"kept your own {link.name}; this stack's settings are in {target}"
    link.symlink_to(target)
    return f"{link.name} -> {target}: the rampwatch command reads it in this folder"


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(
    exit_after_demo: bool = False, *, demo: bool = True, root: Path = CHECKOUT, var: Path | None = None
) -> int:
    """Run the stack (see the module docstring); the exit code: 0, 1 when the demo failed
    or a process exited, 2 when no Redis could be started."""
    with _interruptible() as stop:
        return _run(stop, exit_after_demo=exit_after_demo, demo=demo, root=root, var=var or root / "var")


def _run(stop: threading.Event, *, exit_after_demo: bool, demo: bool, root: Path, var: Path) -> int:
    dev = var / "dev"
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    redis: PrivateRedis | None = None
    sandboxes: list[SandboxKit] = []
    partner: DemoPartner | None = None
    group = ProcessGroup(env, root)
    try:
        if not env.get("REDIS_URL"):
            try:
                redis = PrivateRedis().start()
            except NoRedisServer as exc:
                say(f"cannot start a Redis: {exc}")
                return 2
            env["REDIS_URL"] = redis.url
            say(f"started a private Redis ({Path(redis.server).name}) at {redis.url}")
        else:
            say(f"using REDIS_URL={env['REDIS_URL']}")
        env.setdefault("DATABASE_URL", f"sqlite:///{(var / 'rampwatch.sqlite3').as_posix()}")
        say(f"database: {env['DATABASE_URL'].split('@')[-1]}")
        web_port = int(env.get("PORT") or free_port())
        base = f"http://127.0.0.1:{web_port}"
        token = env.get("RAMPWATCH_API_TOKEN") or secrets.token_urlsafe(24)
        ops_token = env.get("RAMPWATCH_OPS_TOKEN") or secrets.token_urlsafe(24)
        env.update(
            PORT=str(web_port),
            HOST="127.0.0.1",
            WEB_CONCURRENCY=env.get("WEB_CONCURRENCY", "2"),
            RAMPWATCH_API_TOKEN=token,
            RAMPWATCH_OPS_TOKEN=ops_token,
            RAMPWATCH_SWEEP_INTERVAL=env.get("RAMPWATCH_SWEEP_INTERVAL", "2"),
        )
        stamp = time.strftime("%H%M%S")
        settings = {name: env[name] for name in CORE_SETTINGS if env.get(name)}
        if not env.get("NOTIFY_URL"):
            partner = DemoPartner(new_secret(), dev / "notifications.jsonl").start()
            settings.update(NOTIFY_URL=partner.url, NOTIFY_SECRET=partner.secret)
        else:
            say(f"notifications go to NOTIFY_URL={env['NOTIFY_URL']} (yours)")
        scenarios: list[Scenario] = []
        for start in PROVIDERS.values():
            part = start(dev, base, env, stamp)
            sandboxes.append(part.sandbox)
            settings.update(part.settings)
            scenarios += part.scenarios
        env.update(settings)
        dotenv = write_dotenv(
            dev / ".env",
            settings,
            [f"The settings of the stack `make run` started at {time.strftime('%Y-%m-%d %H:%M:%S')}."],
        )
        where = "here" if Path.cwd() == root else str(root)
        say(f"settings of this stack: {_shown(dotenv)} (a second shell: cd {where} and run rampwatch ...)")
        linked = link_dotenv(root, dotenv)
        if linked:
            say(linked)
        if partner is not None:
            log = _shown(partner.log_path)
            say(f"notifications: a demo partner at {partner.url} verifies each (NOTIFY_SECRET) and logs it")
            say(f"watch them arrive: tail -f {log}")

        group = ProcessGroup(env, root)
        procfile = read_procfile(root / "Procfile")
        if stop.is_set():
            return 0
        if group.run_once("release", procfile["release"]) != 0:
            say("release failed: see its output above")
            return 1
        if stop.is_set():
            return 0
        for name in PROCESSES:
            group.start(name, procfile[name])
        try:
            if not wait_ready(f"{base}/readyz", group, stop):
                return 0
        except RuntimeError as exc:
            say(str(exc))
            return 1
        say(f"web is ready at {base}")
        status = 0
        if demo:
            status = run_demo(base, token, scenarios, group, stop)
            if stop.is_set():
                return 0
            if partner is not None:
                status = max(status, _notified(partner, scenarios, stop))
                if stop.is_set():
                    return 0
            print_howto(base, token, ops_token, sandboxes[0].url, _shown(dotenv))
        if exit_after_demo:
            return status
        say(f"operator console: {base}/console/ (log in with RAMPWATCH_OPS_TOKEN from {_shown(dotenv)})")
        say("serving; press Ctrl-C to stop")
        while not stop.wait(0.5):
            if group.dead():
                say(f"process(es) exited: {', '.join(group.dead())}; stopping")
                return 1
        return status
    finally:
        _stop(group, sandboxes, redis, partner)


def _notified(partner: DemoPartner, scenarios: list[Scenario], stop: threading.Event) -> int:
    """What the demo partner was told of the demo's orders, one line each and a count;
    0 when each order's SUCCESS arrived (within a bound), all in version order."""
    orders = [f"{sc.provider} {sc.order_id}" for sc in scenarios]
    arrived = partner.wait_for(orders, "SUCCESS", NOTIFY_WAIT, stop)
    lines, in_order = partner.summary()
    for line in lines:
        say(f"partner: {line}")
    if not arrived:
        missing = [o for o in orders if "SUCCESS" not in partner.statuses(o)]
        say(f"partner: FAILED, no SUCCESS notification for {', '.join(missing)} within {NOTIFY_WAIT:g}s")
    return 0 if arrived and in_order else 1


def _stop(
    group: ProcessGroup,
    sandboxes: list[SandboxKit],
    redis: PrivateRedis | None,
    partner: DemoPartner | None = None,
) -> None:
    """The processes first, then what they use: no process sees its Redis vanish."""
    if group.children:
        say(f"stopping {', '.join(name for name, _ in group.children)}")
        codes = group.stop()
        failed = {name: code for name, code in codes.items() if code != 0}
        say(f"stopped {', '.join(codes)}" + (f" (exit codes: {failed})" if failed else ""))
    if partner is not None:
        partner.stop()
        say("stopped the demo partner")
    for sandbox in sandboxes:
        sandbox.stop()
    if sandboxes:
        say(f"stopped the {', '.join(s.name for s in sandboxes)} sandboxes")
    if redis is not None:
        redis.stop()
        say(f"stopped the private Redis at {redis.url}")
