"""The demo ``make run`` runs once the stack is up: orders through the API, to SUCCESS.

Each provider's scenarios are created through ``POST /api/orders/<provider>``;
the sandbox then moves each order along (an autopilot), dropping every
callback of an order that must be finished by the reconciler. The demo prints
each change of an order as the API shows it and, at the end, which source
(create, callback, poll) brought each status. This module owns that run and
the how-to printed after it; it stops early, quietly, on Ctrl-C.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Sequence
from typing import Any

import requests

from devkit.processes import ProcessGroup
from devkit.stack import Scenario, emit, say


def run_demo(
    base: str,
    token: str,
    scenarios: Sequence[Scenario],
    group: ProcessGroup,
    stop: threading.Event,
    timeout: float = 120.0,
) -> int:
    """Create and follow every scenario's order; 0 when all reached SUCCESS (or the demo
    was interrupted by ``stop``), else 1."""
    headers = {"Authorization": f"Bearer {token}"}
    try:
        for sc in scenarios:
            url = f"{base}/api/orders/{sc.provider}"
            resp = requests.post(url, json=sc.request, headers=headers, timeout=10)
            if resp.status_code != 201:
                say(f"creating {sc.provider} {sc.order_id} failed: HTTP {resp.status_code} {resp.text[:300]}")
                return 1
            note = f"  ({sc.note})" if sc.note else ""
            say(f"created {sc.provider} {sc.order_id}: {resp.json()['status']}{note}")
            if sc.drop_callbacks:
                sc.sandbox.set_switches(order_id=sc.order_id, drop=True)
            sc.sandbox.autopilot(sc.order_id, sc.steps, 1.5)
        views = _follow(base, headers, scenarios, group, stop, timeout)
    except requests.RequestException as exc:
        if stop.is_set():
            return 0
        say(f"demo: FAILED, the API did not answer: {type(exc).__name__}")
        return 1
    if stop.is_set():
        return 0
    for sc in scenarios:
        view = views.get(sc.order_id, {"timeline": []})
        trail = [
            f"{e['provider_status'] or ('(trigger)' if e['decision'] == 'recorded' else '(created)')}<-{e['source']}"
            for e in view["timeline"]
            if e["decision"] in ("applied", "recorded")
        ]
        say(f"{sc.provider} {sc.order_id}: {', '.join(trail)}")
    ok = all(views.get(sc.order_id, {}).get("status") == "SUCCESS" for sc in scenarios)
    last = {oid: view.get("status") for oid, view in views.items()}
    say("demo: every order reached SUCCESS" if ok else f"demo: FAILED, last seen {json.dumps(last)}")
    return 0 if ok else 1


def _follow(
    base: str,
    headers: dict[str, str],
    scenarios: Sequence[Scenario],
    group: ProcessGroup,
    stop: threading.Event,
    timeout: float,
) -> dict[str, dict[str, Any]]:
    """Every order's view as the API shows it, printed when it changes, until all are at
    SUCCESS, ``timeout`` passes, a child exits or ``stop`` is set."""
    seen: dict[str, tuple[str, int]] = {}
    views: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not group.dead() and not stop.is_set():
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
        if len(views) == len(scenarios) and all(v["status"] == "SUCCESS" for v in views.values()):
            break
        stop.wait(0.5)
    return views


def print_howto(base: str, token: str, ops_token: str, sandbox_url: str, dotenv: str) -> None:
    """How to drive the running stack by hand: create an AliX order, move it, watch it;
    the operator's views (raw bodies, metrics)."""
    q = shlex.quote
    order = (
        '{"externalOrderId":"my-order-1","currency":"USDT","network":"TRC20","fiatAmount":1000000,'
        '"bankCode":"VCB","bankAccountNumber":"0123456789","bankAccountName":"NGUYEN VAN A"}'
    )
    emit(
        f"""
Create an order and watch it:
  curl -s -X POST {base}/api/orders/alixpay -H {q("Authorization: Bearer " + token)} \\
       -H 'Content-Type: application/json' -d {q(order)}
  curl -s -X POST {sandbox_url}/sandbox/orders/my-order-1/advance -H 'Content-Type: application/json' \\
       -d '{{"status":"SUCCESS"}}'
  curl -s {base}/api/orders/alixpay/my-order-1 -H {q("Authorization: Bearer " + token)}
  (in another shell, with the settings of {dotenv}) .venv/bin/rampwatch orders show alixpay my-order-1
The operator's token (raw bodies, reconcile, anomalies, metrics):
  curl -s {base}/metrics -H {q("Authorization: Bearer " + ops_token)}
"""
    )
