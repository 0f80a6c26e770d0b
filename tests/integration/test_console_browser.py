"""The web console in a real browser (Debian's chromium, headless, driven by Playwright)
against the real stack: worker and HTTP edge processes on the session's broker, the
Stripe sink on a thread, the Stripe simulator.

A person logs in with an API key, finds an account, sees its usage chart with the right
totals, opens its bill, approves it and sees that Stripe's items match the bill's lines;
every control is labelled and the pages work from the keyboard. Screenshots of each page
go to test-artifacts/console/ (gitignored).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.kafka.broker import free_port
from tests.integration.test_billing_flow import DAY, bills_of, run_bills, usage, usage_total
from tests.integration.test_stripe_sink import running, sdk, sink_settings
from tests.stack import API_KEY, Stack, now_s
from tests.support import eventually
from tests.unit.stripe_payloads import BASIL, Item, customer, event, price, subscription

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
NAME = "Console Test Company"
# Every visible form control must have a label: <label for>, a wrapping <label>, or aria-label.
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(e => e.type !== 'hidden')
  .filter(e => e.tagName === 'BUTTON' ? !e.textContent.trim() && !e.getAttribute('aria-label')
    : !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML)"""


@pytest.fixture(scope="module")
def console_stack(
    kafka_bootstrap: str, stripe_sim: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, str]]:
    """A stack whose edge reads Stripe (the simulator), with the Stripe sink running."""
    sink_port = free_port()
    stack = Stack(
        kafka_bootstrap,
        tmp_path_factory.mktemp("console"),
        STRIPE_API_BASE=stripe_sim,
        STRIPE_API_KEY="sk_test_console",
        METERLINE_SINK_PORT=str(sink_port),
    )
    try:
        stack.start_worker()
        stack.start_http()
        settings = sink_settings(stack.bootstrap, stack.topics, stripe_sim, sink_port=sink_port)
        with running(settings):
            yield stack, stripe_sim
    finally:
        stack.stop()


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A page of a fresh headless chromium (its own profile); fails when there is none."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"{CHROMIUM} is missing: the console's browser test needs Debian's chromium "
            "(`apt-get install -y chromium chromium-driver`; `make test` installs it)"
        )
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="console-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def subscribe(stack: Stack, account: str) -> None:
    start = now_s() - 2 * DAY
    item = Item(f"si_{account}", price("price_starter_monthly", lookup_key="starter_monthly"))
    events = [
        event(
            "customer.created", customer(account, name=NAME), created=start, id=f"evt_c{account}"
        ),
        event(
            "customer.subscription.created",
            subscription(
                f"sub_{account}",
                api=BASIL,
                customer=account,
                items=[item],
                created=start,
                period=(start, start + 30 * DAY),
            ),
            created=start + 1,
            id=f"evt_s{account}",
        ),
    ]
    stack.produce(stack.topics.stripe_events, account, [orjson.dumps(e) for e in events])


def go(page: Any, action: Any) -> None:
    """Do what loads another page and wait for it (nothing is checked on the old one)."""
    with page.expect_navigation():
        action()


def submit(page: Any, key: str) -> None:
    go(page, lambda: page.keyboard.press(key))


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def assert_accessible(page: Any) -> None:
    assert page.evaluate(UNLABELLED) == [], "form controls without a label"


def test_a_person_finds_an_account_sees_its_usage_approves_its_bill_and_sees_stripe_agree(
    console_stack: tuple[Stack, str], browser_page: Any
) -> None:
    stack, sim = console_stack
    account = sdk(sim).v1.customers.create(params={"name": NAME, "email": "ops@console.test"}).id
    subscribe(stack, account)
    usage(stack, account, "console-1", 12_000, "ann")
    usage(stack, account, "console-2", 3_000, "bob")
    unknown_meter = {
        "uid": "console-bad",
        "meter": "nope",
        "account": account,
        "ts": "2026-01-01T00:00:00Z",
    }
    stack.produce(stack.topics.measurements, account, [orjson.dumps(unknown_meter)])
    stack.wait_for(lambda: usage_total(stack, account, 15_000), timeout=60)
    run_bills(stack, account)
    bill = stack.wait_for(lambda: bills_of(stack, account), timeout=60)[0]
    page, base = browser_page, f"http://127.0.0.1:{stack.http_port}/console"

    # Log in from the keyboard: Tab reaches the key field, Enter submits.
    page.goto(f"{base}/accounts")
    assert "/console/login" in page.url
    assert_accessible(page)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "key"
    page.keyboard.type("wrong-key")
    submit(page, "Enter")
    assert page.get_by_role("alert").inner_text() == "invalid API key"
    shot(page, "login-refused")
    page.get_by_label("API key").fill(API_KEY)
    submit(page, "Enter")
    page.wait_for_url(f"{base}/accounts")

    # Find the account by its name.
    page.get_by_label("Search by code, name, email or Stripe customer").fill("console test")
    submit(page, "Enter")
    row = page.locator("tr", has=page.locator(f"th:text-is('{account}')"))
    assert NAME in row.inner_text() and "starter" in row.inner_text()
    assert_accessible(page)
    shot(page, "accounts")

    # Its usage: the chart and exact totals.
    go(page, row.get_by_role("link", name=f"Usage of {account}").click)
    page.get_by_label("api_calls").check()
    page.get_by_label("active_users").check()
    go(page, page.get_by_role("button", name="Show usage").click)
    assert page.locator(f"[data-total='api_calls of {account}']").inner_text() == "15000"
    assert page.locator(f"[data-total='active_users of {account}']").inner_text() == "2"
    assert page.locator("svg.chart circle").count() >= 1
    assert_accessible(page)
    shot(page, "usage")

    # Its bill: lines, bands, versions, Stripe's items.
    go(page, page.get_by_role("link", name="Bills").first.click)
    page.get_by_label("Account").fill(account)
    submit(page, "Enter")
    go(page, page.get_by_role("link", name=bill["id"]).click)
    assert page.locator("#bill-total").inner_text() == f"{bill['total']} USD"
    assert "USAGE:api_calls" in page.locator("#lines").inner_text()
    assert page.locator("table.bands").count() >= 1
    stripe_agrees(page, bill["lines"])
    assert_accessible(page)
    shot(page, "bill")

    # Lock before approval: the lifecycle's error is shown. Approve: Stripe follows.
    go(page, page.get_by_role("button", name="Lock").click)
    assert "approve" in page.get_by_role("alert").inner_text().lower()
    page.get_by_role("button", name="Approve").focus()
    submit(page, "Enter")
    page.wait_for_url("**done=APPROVED")
    assert page.locator("#bill-status").inner_text() == "APPROVED"
    assert "APPROVED" in page.locator("#versions").inner_text()
    stripe_agrees(page, bill["lines"], status="APPROVED")
    shot(page, "bill-approved")

    # Dead letters and health (figures refresh without reloading).
    go(page, page.get_by_role("link", name="Dead letters").click)
    rejected = page.locator("tr", has=page.locator(f"td:text-is('{account}')")).first
    assert "nope" in rejected.inner_text()
    assert f"{stack.topics.measurements}[" in rejected.inner_text()
    rejected.locator("summary").click()
    assert "console-bad" in rejected.locator("pre").inner_text()
    assert_accessible(page)
    shot(page, "deadletters")
    go(page, page.get_by_role("link", name="Health").click)
    first = page.locator("#updated-at").inner_text()
    eventually(lambda: page.locator("#updated-at").inner_text() != first, timeout=15)
    assert "measurements[0]" in page.locator("#lag").inner_text()
    processes = page.locator("#processes").inner_text()
    assert "worker" in processes and "stripe sink" in processes
    shot(page, "health")
    focus_is_visible(page)


def stripe_agrees(page: Any, lines: list[dict[str, Any]], status: str | None = None) -> None:
    """Reload the bill until the sink synced its version and Stripe holds every line."""

    def agrees() -> bool:
        page.reload()
        cells = page.locator("#stripe-items tbody td:last-child").all_inner_texts()
        synced = page.locator("#sync").inner_text()
        return (
            len(cells) == len(lines)
            and all(cell == "yes" for cell in cells)
            and "behind" not in synced
            and (status is None or status in synced)
        )

    eventually(agrees, timeout=60)


def focus_is_visible(page: Any) -> None:
    """A control reached with Tab shows a focus outline."""
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), (
        f"no visible focus on {page.evaluate('document.activeElement.outerHTML')}"
    )
