"""``rampwatch simulate``: a callback signed as the provider signs passes the receiver's
verification; one signed with another key is refused. The receiver is the real one on
loopback (the ``stack`` fixture), the callbacks are applied by a real worker."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import run
from conftest import FUSPAY_PUBLIC, FUSPAY_SECRET, WEBHOOK_SECRET, KeyPair, Keys, Stack


def _pem(pair: KeyPair, path: Path) -> str:
    path.write_text(pair.private_pem)
    return str(path)


def test_simulated_alixpay_ipn_is_accepted_and_a_wrong_key_refused(
    stack: Stack, keys: Keys, tmp_path: Path
) -> None:
    url = f"{stack.base}/webhooks/alixpay"
    theirs = _pem(keys.alix, tmp_path / "alix.pem")
    args = ["simulate", "alixpay", "sim-1", "SUCCESS", "--url", url, "--fiat-amount", "2500000"]
    done = run([*args, "--key", theirs, "--secret", WEBHOOK_SECRET], stack.env, tmp_path)
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"POST {url} -> 200")
    stack.drain()
    order = stack.runtime.store.order_view("alixpay", "sim-1")
    assert order is not None and order.status == "SUCCESS" and order.fiat_amount == "2500000"
    assert order.events[0].verified_by == "ALIXPAY_PUBLIC_KEY+ALIXPAY_WEBHOOK_SECRET_KEY"
    wrong = run(
        [*args, "--key", _pem(keys.alix_old, tmp_path / "old.pem"), "--secret", WEBHOOK_SECRET],
        stack.env,
        tmp_path,
    )
    assert wrong.exit_code == 1 and "-> 401" in wrong.stdout
    missing = run(
        ["simulate", "alixpay", "sim-1", "SUCCESS", "--url", url, "--key", theirs], stack.env, tmp_path
    )
    assert missing.exit_code == 2 and "--fiat-amount" in missing.stderr


def test_simulated_changelly_callback_verifies_by_its_header(
    stack: Stack, keys: Keys, tmp_path: Path
) -> None:
    url = f"{stack.base}/webhooks/changelly"
    args = ["simulate", "changelly", "ch-sim-1", "complete", "--url", url, "--external-id", "x-1", "--json"]
    done = run([*args, "--key", _pem(keys.changelly_callback, tmp_path / "cb.pem")], stack.env, tmp_path)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["status"] == 200
    wrong = run([*args, "--key", _pem(keys.alix, tmp_path / "other.pem")], stack.env, tmp_path)
    assert wrong.exit_code == 1 and json.loads(wrong.stdout)["status"] == 401


def test_simulated_fuspay_event_is_accepted_and_applied(stack: Stack, tmp_path: Path) -> None:
    url = f"{stack.base}/webhooks/fuspay"
    args = ["simulate", "fuspay", "fu-sim-1", "event.sell.init", "--url", url, "--public-key", FUSPAY_PUBLIC]
    done = run([*args, "--secret", FUSPAY_SECRET, "--fiat-amount", "150000"], stack.env, tmp_path)
    assert done.exit_code == 0, done.output
    stack.drain()
    order = stack.runtime.store.order_view("fuspay", "fu-sim-1")
    assert order is not None and order.status == "AWAITING_PAYMENT"
    wrong = run([*args, "--secret", "sk_partner_wrong"], stack.env, tmp_path)
    assert wrong.exit_code == 1 and "-> 401" in wrong.stdout
