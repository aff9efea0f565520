"""``rampwatch dev`` (``make run``): the whole service on one machine, with the AliX sandbox.

It uses ``REDIS_URL`` when set, else starts a private Redis (``devkit.localredis``);
``DATABASE_URL`` when set, else the embedded SQLite default. It makes our AliX
key pair under ``var/dev`` (kept across runs), starts the AliX sandbox with its
own key, wires both into the settings of every process, runs the Procfile's
``release`` line and then its ``web``, ``worker`` and ``clock`` lines as real
processes, and runs a demo: one order that reaches SUCCESS through its IPNs and
one whose IPNs are all dropped, which the reconciler brings to SUCCESS. Then it
keeps serving until interrupted (or exits with ``--exit-after-demo``).

This module runs only on a developer's machine; it reads and sets environment
variables for its child processes (an exemption from "only config/ reads the
environment", named in the architecture test).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from devkit.kit import load_or_create_rsa_key
from devkit.localredis import PrivateRedis, free_port

CHECKOUT = Path(__file__).resolve().parent.parent  # the Procfile and var/ are here
PARTNER_CODE = "rampwatch-dev"
SECRET = "dev-partner-secret"  # noqa: S105 - the local sandbox's, never a real one
WEBHOOK_SECRET = "dev-webhook-secret"  # noqa: S105 - likewise


def say(message: str) -> None:
    print(f"[rampwatch dev] {message}", flush=True)


def _keypair(folder: Path, stem: str) -> tuple[RSAPrivateKey, Path, Path]:
    """The key kept in ``folder/<stem>_private.pem`` (PKCS#8; made once) and the paths of
    its two PEM files (the public one SubjectPublicKeyInfo)."""
    private, public = folder / f"{stem}_private.pem", folder / f"{stem}_public.pem"
    return load_or_create_rsa_key(private, public), private, public


def read_procfile(path: Path) -> dict[str, str]:
    lines = {}
    for raw in path.read_text().splitlines():
        if raw.strip() and not raw.lstrip().startswith("#") and ":" in raw:
            name, command = raw.split(":", 1)
            lines[name.strip()] = command.strip()
    return lines


class Supervisor:
    """Runs Procfile lines as child processes with prefixed output; stops them all."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: str) -> None:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {command}"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.children.append((name, proc))
        threading.Thread(target=self._pump, args=(name, proc), daemon=True).start()

    @staticmethod
    def _pump(name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"{name:>7} | {line.decode(errors='replace').rstrip()}", flush=True)

    def run_once(self, name: str, command: str) -> None:
        say(f"{name}: {command}")
        subprocess.run(["/bin/sh", "-c", command], env=self.env, check=True)

    def dead(self) -> list[str]:
        return [name for name, proc in self.children if proc.poll() is not None]

    def stop(self) -> None:
        for _name, proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _name, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready within {timeout}s")


@dataclass
class Scenario:
    """One demo order: created through the API, moved by its sandbox."""

    provider: str
    order_id: str
    request: dict[str, Any]
    steps: list[str]
    sandbox: Any
    drop_callbacks: bool = False
    note: str = ""


def start_alixpay(dev: Path, base: str, env: dict[str, str], stamp: str) -> list[Scenario]:
    from devkit.alixpay.sandbox import AlixSandbox

    our_key, ours, _ = _keypair(dev, "alixpay_partner")
    their_key, _, theirs_public = _keypair(dev, "alixpay_sandbox")
    sandbox = AlixSandbox(
        partner_code=PARTNER_CODE,
        secret_key=SECRET,
        webhook_secret_key=WEBHOOK_SECRET,
        partner_public_key=our_key.public_key(),
        alix_private_key=their_key,
        callback_url=f"{base}/webhooks/alixpay",
    ).start()
    say(f"AliX sandbox at {sandbox.url}, posting IPNs to {base}/webhooks/alixpay")
    env.update(
        ALIXPAY_PARTNER_CODE=PARTNER_CODE,
        ALIXPAY_SECRET_KEY=SECRET,
        ALIXPAY_WEBHOOK_SECRET_KEY=WEBHOOK_SECRET,
        ALIXPAY_PRIVATE_KEY=str(ours),
        ALIXPAY_PUBLIC_KEY=str(theirs_public),
        ALIXPAY_BASE_URL=sandbox.url,
        ALIXPAY_POLL_BACKOFF=env.get("ALIXPAY_POLL_BACKOFF", "2s,3s,5s,10s,30s"),
        ALIXPAY_TIMEOUT="5",
    )

    def sell(order_id: str) -> dict[str, Any]:
        return {
            "externalOrderId": order_id,
            "currency": "USDT",
            "network": "TRC20",
            "fiatAmount": 2500000,
            "bankCode": "VCB",
            "bankAccountNumber": "0123456789",
            "bankAccountName": "NGUYEN VAN A",
        }

    steps = ["PAYMENT_COMPLETED", "PROCESSING_TOKEN_TRANSFER", "SUCCESS"]
    return [
        Scenario("alixpay", f"alix-{stamp}-ipn", sell(f"alix-{stamp}-ipn"), steps, sandbox),
        Scenario(
            "alixpay",
            f"alix-{stamp}-dropped",
            sell(f"alix-{stamp}-dropped"),
            steps,
            sandbox,
            drop_callbacks=True,
            note="all its IPNs will be dropped: only the reconciler can finish it",
        ),
    ]


def start_changelly(dev: Path, base: str, env: dict[str, str], stamp: str) -> list[Scenario]:
    from devkit.changelly.sandbox import ChangellySandbox

    our_key, ours, _ = _keypair(dev, "changelly_partner")
    their_key, _, theirs_public = _keypair(dev, "changelly_sandbox_callback")
    api_key = "dev-changelly-api-key"
    sandbox = ChangellySandbox(
        api_key=api_key,
        partner_public_key=our_key.public_key(),
        callback_private_key=their_key,
        callback_url=f"{base}/webhooks/changelly",
    ).start()
    say(f"Changelly sandbox at {sandbox.url}, posting callbacks to {base}/webhooks/changelly")
    env.update(
        CHANGELLY_API_KEY=api_key,
        CHANGELLY_PRIVATE_KEY=str(ours),
        CHANGELLY_CALLBACK_PUBLIC_KEY=str(theirs_public),
        CHANGELLY_BASE_URL=sandbox.url,
        CHANGELLY_CALLBACK_POLL_WINDOW="2",
        CHANGELLY_POLL_BACKOFF=env.get("CHANGELLY_POLL_BACKOFF", "2s,3s,5s,10s,30s"),
        CHANGELLY_TIMEOUT="5",
    )
    order_id = f"changelly-{stamp}"
    request = {
        "externalOrderId": order_id,
        "externalUserId": "demo-user",
        "providerCode": "moonpay",
        "currencyFrom": "BTC",
        "currencyTo": "EUR",
        "amountFrom": "0.01",
        "country": "DE",
    }
    return [
        Scenario(
            "changelly",
            order_id,
            request,
            ["pending", "complete"],
            sandbox,
            note="its callbacks only trigger polls: the polls' answers are applied",
        )
    ]


def start_fuspay(dev: Path, base: str, env: dict[str, str], stamp: str) -> list[Scenario]:
    from devkit.fuspay.sandbox import FuspaySandbox

    partner_id, public, secret = "p000001", "pk_partner_dev", "sk_partner_dev"
    sandbox = FuspaySandbox(
        partner_id=partner_id, public_key=public, secret_key=secret, callback_url=f"{base}/webhooks/fuspay"
    ).start()
    say(f"Fuspay sandbox at {sandbox.url}, posting events to {base}/webhooks/fuspay")
    env.update(
        FUSPAY_PARTNER_ID=partner_id,
        FUSPAY_PUBLIC_KEY=public,
        FUSPAY_SECRET_KEY=secret,
        FUSPAY_BASE_URL=sandbox.url,
        FUSPAY_CALLBACK_URL=f"{base}/webhooks/fuspay",
        FUSPAY_POLL_BACKOFF=env.get("FUSPAY_POLL_BACKOFF", "2s,3s,5s,10s,30s"),
        FUSPAY_TIMEOUT="5",
    )
    order_id = f"fuspay-{stamp}"
    request = {
        "partner_order_id": order_id,
        "chain": "usdt-trc20",
        "crypto_amount": "100",
        "fiat_currency_to_receive": "NGN",
        "seller_phone": "+2348000000000",
        "seller_email": "seller@example.com",
        "first_name": "Ada",
        "last_name": "Obi",
        "account_name": "Ada Obi",
        "account_number": "0123456789",
        "account_code": "090405",
        "intrapay_merchant_id": "m-dev",
        "markup_fee": "1",
        "refund_wallet_address": "TXLYE1yx8LyXfTY1utnXEm7DtzWsgvYBWB",
    }
    steps = ["event.sell.received.crypto", "event.sell.credited.fiat"]
    return [Scenario("fuspay", order_id, request, steps, sandbox, note="signed events, HMAC-SHA512")]


STARTERS = [start_alixpay, start_fuspay, start_changelly]


def main(exit_after_demo: bool = False, root: Path | None = None) -> int:
    root = root or CHECKOUT
    dev = root / "var" / "dev"
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    redis_server = None
    if not env.get("REDIS_URL"):
        redis_server = PrivateRedis().start()
        env["REDIS_URL"] = redis_server.url
        say(f"started a private Redis ({Path(redis_server.server).name}) at {redis_server.url}")
    else:
        say(f"using REDIS_URL={env['REDIS_URL']}")
    env.setdefault("DATABASE_URL", f"sqlite:///{(root / 'var' / 'rampwatch.sqlite3').as_posix()}")
    say(f"database: {env['DATABASE_URL'].split('@')[-1]}")
    web_port = int(env.get("PORT") or free_port())
    token = env.get("RAMPWATCH_API_TOKEN") or secrets.token_urlsafe(24)
    base = f"http://127.0.0.1:{web_port}"
    env.update(
        PORT=str(web_port),
        HOST="127.0.0.1",
        WEB_CONCURRENCY=env.get("WEB_CONCURRENCY", "2"),
        RAMPWATCH_API_TOKEN=token,
        RAMPWATCH_SWEEP_INTERVAL=env.get("RAMPWATCH_SWEEP_INTERVAL", "2"),
    )
    stamp = time.strftime("%H%M%S")
    scenarios: list[Scenario] = []
    for start in STARTERS:
        scenarios += start(dev, base, env, stamp)
    sandboxes = {id(s.sandbox): s.sandbox for s in scenarios}.values()
    procfile = read_procfile(root / "Procfile")
    sup = Supervisor(env)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    status = 0
    try:
        sup.run_once("release", procfile["release"])
        for name in ("web", "worker", "clock"):
            sup.start(name, procfile[name])
        wait_ready(f"{base}/readyz")
        say(f"web is ready at {base}")
        status = demo(base, token, scenarios, sup)
        print_howto(base, token, scenarios[0].sandbox.url)
        if not exit_after_demo:
            say("serving; press Ctrl-C to stop")
            while not stop.is_set():
                if sup.dead():
                    say(f"process(es) exited: {', '.join(sup.dead())}; stopping")
                    status = 1
                    break
                stop.wait(1)
    finally:
        say("stopping")
        sup.stop()
        for sandbox in sandboxes:
            sandbox.stop()
        if redis_server:
            redis_server.stop()
    return status


def demo(base: str, token: str, scenarios: list[Scenario], sup: Supervisor, timeout: float = 120.0) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    for sc in scenarios:
        resp = requests.post(f"{base}/api/orders/{sc.provider}", json=sc.request, headers=headers, timeout=10)
        if resp.status_code != 201:
            say(f"creating {sc.provider} {sc.order_id} failed: HTTP {resp.status_code} {resp.text[:300]}")
            return 1
        say(
            f"created {sc.provider} {sc.order_id}: {resp.json()['status']}"
            + (f"  ({sc.note})" if sc.note else "")
        )
        if sc.drop_callbacks:
            sc.sandbox.set_switches(order_id=sc.order_id, drop=True)
        sc.sandbox.autopilot(sc.order_id, sc.steps, 1.5)
    seen: dict[str, tuple[str, int]] = {}
    views: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not sup.dead():
        for sc in scenarios:
            url = f"{base}/api/orders/{sc.provider}/{sc.order_id}"
            view = views[sc.order_id] = requests.get(url, headers=headers, timeout=5).json()
            state = (view["status"], view["version"])
            if seen.get(sc.order_id) != state:
                seen[sc.order_id] = state
                applied = [e for e in view["timeline"] if e["decision"] == "applied"]
                via = applied[-1]["source"] if applied else "-"
                say(
                    f"{sc.provider} {sc.order_id}: {view['status']} "
                    f"(provider {view['provider_status']}, v{view['version']}, via {via})"
                )
        if all(v["status"] == "SUCCESS" for v in views.values()) and len(views) == len(scenarios):
            break
        time.sleep(0.5)
    for sc in scenarios:
        view = views.get(sc.order_id, {"timeline": []})
        trail = [
            f"{e['provider_status'] or ('(trigger)' if e['decision'] == 'recorded' else '(created)')}<-{e['source']}"
            for e in view["timeline"]
            if e["decision"] in ("applied", "recorded")
        ]
        say(f"{sc.provider} {sc.order_id}: {', '.join(trail)}")
    ok = all(views.get(sc.order_id, {}).get("status") == "SUCCESS" for sc in scenarios)
    say("demo: every order reached SUCCESS" if ok else f"demo: FAILED, last seen {json.dumps(seen)}")
    return 0 if ok else 1


def print_howto(base: str, token: str, sandbox_url: str) -> None:
    q = shlex.quote
    order = (
        '{"externalOrderId":"my-order-1","currency":"USDT","network":"TRC20","fiatAmount":1000000,'
        '"bankCode":"VCB","bankAccountNumber":"0123456789","bankAccountName":"NGUYEN VAN A"}'
    )
    print(
        f"""
Create an order and watch it:
  curl -s -X POST {base}/api/orders/alixpay -H {q("Authorization: Bearer " + token)} \\
       -H 'Content-Type: application/json' -d {q(order)}
  curl -s -X POST {sandbox_url}/sandbox/orders/my-order-1/advance -H 'Content-Type: application/json' \\
       -d '{{"status":"SUCCESS"}}'
  curl -s {base}/api/orders/alixpay/my-order-1 -H {q("Authorization: Bearer " + token)}
  (in another shell, with the same settings) .venv/bin/rampwatch orders show alixpay my-order-1
""",
        flush=True,
    )
