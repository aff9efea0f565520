"""The operator console end to end in headless Chromium (Debian's ``chromium`` package,
driven by Playwright): log in, filter, open an order, reconcile it and see its new status,
resolve an anomaly, requeue a failed job; a wrong or missing token and a form without its
CSRF token are refused. Each run writes a screenshot of every page to var/screenshots/console/.

One browser for the module; each test gets a fresh browser context (no cookies) and the
receiver on a loopback port over the test's own database and Redis."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "browser tests skipped: Debian's chromium is not installed (make test installs it with apt-get)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="browser tests skipped: the playwright package is not installed"
)

from conftest import Keys, serve_receiver  # noqa: E402
from consolekit import (  # noqa: E402
    OPS_TOKEN,
    PARTNER_TOKEN,
    alix_callback,
    console_app,
    console_services,
)
from redis import Redis  # noqa: E402
from scenarios import alixpay_sell  # noqa: E402
from sqlalchemy import update  # noqa: E402

from devkit.alixpay.sandbox import AlixSandbox  # noqa: E402
from orders.events import utcnow  # noqa: E402
from orders.models import Anomaly, Notification, Order  # noqa: E402
from workers.queue import Queues  # noqa: E402
from workers.services import Services  # noqa: E402
from workers.worker import make_worker  # noqa: E402

Page = sync_api.Page
expect = sync_api.expect
# Written where git does not look, so that a test run leaves the checkout clean; the README's
# copies in docs/console/ come from such a run (cp var/screenshots/console/*.png docs/console/).
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots" / "console"
VIEWPORT = {"width": 1280, "height": 860}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def runtime(database_url: str, redis: Redis, keys: Keys, sandbox: AlixSandbox) -> Iterator[Services]:
    with console_services(database_url, redis, keys, sandbox.url) as services:
        yield services


@pytest.fixture
def base(runtime: Services, redis: Redis, sandbox: AlixSandbox) -> Iterator[str]:
    app = console_app(runtime.settings, redis, runtime.store, reconcile_wait=10.0)
    populate(runtime)
    server = serve_receiver(app)
    yield server.base
    server.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    # bypass_csp: the console allows no script; the tests' own (removing a field) must run.
    context = browser.new_context(viewport=VIEWPORT, bypass_csp=True)
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def shots(database_url: str) -> bool:
    """Screenshots from the SQLite run only (the PostgreSQL run's pages are the same)."""
    return database_url.startswith("sqlite")


def populate(runtime: Services) -> None:
    """A small store worth looking at, written through the real writer: orders with
    callbacks, polls and an unsigned claim, two stuck orders, an anomaly and a dead
    notification. (The tests that need the sandbox to know an order, or a failed job,
    make them.)"""
    store = runtime.store
    for i in range(2, 9):
        oid = f"ord-20{i:02d}"
        store.apply([alix_callback(oid, "AWAITING_PAYMENT")])
        if i % 2:
            store.apply([alix_callback(oid, "PAYMENT_COMPLETED", source="poll")])
        if i % 3 == 0:
            store.apply([alix_callback(oid, "SUCCESS")])
    store.apply([alix_callback("ord-2002", "SUCCESS", claim="SUCCESS")])
    stuck = datetime.now(UTC) - timedelta(minutes=75)
    with store.sessions.begin() as s:
        s.execute(
            update(Order)
            .where(Order.external_order_id.in_(["ord-2002", "ord-2005"]))
            .values(stuck_at=stuck, stuck_reason="no callback since 1h15m")
        )
        order_id = s.query(Order.id).filter(Order.external_order_id == "ord-2002").scalar()
        s.add(
            Anomaly(
                order_id=order_id,
                kind="amount_mismatch",
                detail='{"ours": "500000", "provider": "499000"}',
                created_at=utcnow(),
            )
        )
        s.add(
            Notification(
                order_id=order_id,
                kind="order.status_changed",
                version=1,
                body="{}",
                created_at=utcnow(),
                attempts=12,
                dead_at=utcnow(),
                last_error="HTTP 503 from https://partner.example/hooks",
            )
        )


def failed_poll(runtime: Services) -> str:
    """A poll of an order AliX does not know fails for good: failed work to requeue."""
    runtime.store.apply([alix_callback("ord-2009", "AWAITING_PAYMENT")])
    runtime.queues.enqueue_poll("alixpay", "ord-2009", reason="sweep")
    make_worker(runtime).work(burst=True)
    (letter,) = Queues(runtime.redis).polls.failed_job_registry.get_job_ids()
    return letter


def log_in(page: Page, base: str, token: str = OPS_TOKEN) -> None:
    page.goto(f"{base}/console/orders")
    expect(page).to_have_url(f"{base}/console/login?next=/console/orders")
    page.get_by_label("Operator token").fill(token)
    page.get_by_role("button", name="Log in").click()


def shoot(page: Page, name: str, enabled: bool) -> None:
    if enabled:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def test_a_wrong_or_missing_token_is_refused(page: Page, base: str, shots: bool) -> None:
    log_in(page, base, token="not-the-operator-token")
    expect(page.get_by_role("alert")).to_have_text("That is not the operator token.")
    shoot(page, "login", shots)
    page.get_by_label("Operator token").evaluate("e => e.removeAttribute('required')")
    page.get_by_label("Operator token").fill("")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That is not the operator token.")
    page.goto(f"{base}/console/failed")
    expect(page).to_have_url(f"{base}/console/login?next=/console/failed")


def test_log_in_filter_open_an_order_and_reconcile_it(
    page: Page, base: str, runtime: Services, redis: Redis, sandbox: AlixSandbox, shots: bool
) -> None:
    partner = {"Authorization": f"Bearer {PARTNER_TOKEN}"}
    resp = requests.post(
        f"{base}/api/orders/alixpay", json=alixpay_sell("ord-2001"), headers=partner, timeout=10
    )
    assert resp.status_code == 201, resp.text
    sandbox.advance("ord-2001", "PAYMENT_COMPLETED")  # no callback: only a poll can tell us
    log_in(page, base)
    expect(page).to_have_url(f"{base}/console/orders")
    expect(page.get_by_role("heading", name="Orders", exact=True)).to_be_visible()
    shoot(page, "orders", shots)
    page.get_by_label("Status", exact=True).select_option("AWAITING_PAYMENT")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(
        f"{base}/console/orders?provider=&status=AWAITING_PAYMENT&stuck=&open_longer_than=&has_open_anomalies="
    )
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(4)  # 2001 (created), 2002 (a claim is not applied), 2004, 2008
    expect(rows.locator("td .status")).to_have_text(["AWAITING_PAYMENT"] * 4)
    page.get_by_role("link", name="ord-2001").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("AWAITING_PAYMENT")
    page.get_by_role("button", name="Reconcile alixpay order ord-2001 now").click(no_wait_after=True)
    deadline = time.monotonic() + 5
    while Queues(redis).polls.count == 0:  # the console waits for this poll: run it
        assert time.monotonic() < deadline, "the console queued no poll"
        time.sleep(0.02)
    make_worker(runtime).work(burst=True)
    expect(page.get_by_role("status")).to_contain_text("Reconciled alixpay ord-2001: PROCESSING")
    expect(page.get_by_role("heading", level=1)).to_contain_text("PROCESSING")
    expect(page.locator("#order-version")).to_have_text("3")


def test_resolve_an_anomaly_with_a_comment(page: Page, base: str, runtime: Services, shots: bool) -> None:
    log_in(page, base)
    page.goto(f"{base}/console/orders/alixpay/ord-2002")
    expect(page.get_by_text("claim: SUCCESS (unsigned)")).to_be_visible()
    page.get_by_text("Raw body of event", exact=False).last.click()  # the toggle opens, keyboard or mouse
    expect(page.locator("details[open] pre").last).to_contain_text('"bankAccountName": "***"')
    shoot(page, "order", shots)
    page.get_by_label("What was done about anomaly").fill("AliX confirmed 499,000: fee, ticket 7")
    page.get_by_label("What was done about anomaly").press("Enter")  # keyboard use
    expect(page.get_by_role("status")).to_contain_text("resolved")
    expect(page.get_by_text("AliX confirmed 499,000: fee, ticket 7")).to_be_visible()
    (anomaly,) = runtime.store.order_view("alixpay", "ord-2002").anomalies
    assert anomaly.resolution == "AliX confirmed 499,000: fee, ticket 7"


def test_requeue_a_failed_job_and_see_the_other_pages(
    page: Page, base: str, runtime: Services, redis: Redis, shots: bool
) -> None:
    letter = failed_poll(runtime)
    log_in(page, base)
    page.get_by_role("link", name="Stuck").click()
    expect(page.locator("tbody tr")).to_have_count(2)
    expect(page.get_by_text("no callback since 1h15m").first).to_be_visible()
    shoot(page, "stuck", shots)
    page.get_by_role("link", name="Activity").click()
    expect(page.locator("svg polyline")).to_have_count(3)
    shoot(page, "activity", shots)
    page.get_by_role("link", name="Failed work").click()
    expect(page.get_by_text("HTTP 503 from https://partner.example/hooks")).to_be_visible()
    shoot(page, "failed", shots)
    page.get_by_role("button", name=f"Requeue {letter}").click()
    expect(page.get_by_role("status")).to_have_text("Requeued 1 dead letter(s)")
    assert Queues(redis).polls.failed_job_registry.count == 0 and Queues(redis).polls.count == 1


def test_a_form_without_its_csrf_token_is_refused(page: Page, base: str, runtime: Services) -> None:
    log_in(page, base)
    page.goto(f"{base}/console/orders/alixpay/ord-2002")
    form = page.locator("form", has=page.get_by_label("What was done about anomaly"))
    form.locator("input[name=csrf_token]").evaluate("e => e.remove()")
    page.get_by_label("What was done about anomaly").fill("no token")
    page.get_by_role("button", name="Resolve").click()
    expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
    assert runtime.store.order_view("alixpay", "ord-2002").anomalies[0].resolved_at is None
