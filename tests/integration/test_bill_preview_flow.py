"""Bill previews on the real broker: a month of hourly usage previewed through the HTTP
edge is the bill a run makes, and until that run nothing reaches `bills` or Stripe."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from streams.money import to_stripe_amount
from tests.integration.test_billing_flow import run_bills, subscribe, usage_total
from tests.integration.test_stripe_sink import (
    handled,
    running,
    sdk,
    sink_settings,
    stripe_state,
)
from tests.stack import Stack, now_s
from tests.support import records_of

pytestmark = pytest.mark.integration
HOUR = 3_600
DAY = 86_400
CALLS_PER_HOUR = 10


def hourly_usage(stack: Stack, account: str, start: int, end: int) -> int:
    """CALLS_PER_HOUR api calls at every hour in [start, end); the hours produced."""
    hours = range(start - start % HOUR + HOUR, end, HOUR)
    values = [
        orjson.dumps(
            {
                "uid": f"{account}-{ts}",
                "meter": "api",
                "account": account,
                "ts": datetime.fromtimestamp(ts, UTC).isoformat(),
                "measure": {"calls": CALLS_PER_HOUR},
            }
        )
        for ts in hours
    ]
    stack.produce(stack.topics.measurements, account, values)
    return len(values)


def bills_on_the_topic(stack: Stack, account: str) -> list[Any]:
    return records_of(stack.bootstrap, stack.topics.bills, account)


def preview(stack: Stack, params: dict[str, str]) -> Any:
    with stack.client() as client:
        return client.get(f"{stack.api}/bills/preview", params=params)


def test_a_preview_of_a_month_of_hourly_usage_is_the_bill_and_reaches_neither_bills_nor_stripe(
    stack: Stack, url: str
) -> None:
    account = sdk(url).v1.customers.create(params={"email": "ops@example.com"}).id
    start = now_s() - 29 * DAY
    subscribe(stack, account, "pro_monthly", (start, start + 30 * DAY))
    hours = hourly_usage(stack, account, start, now_s())
    stack.wait_for(lambda: usage_total(stack, account, hours * CALLS_PER_HOUR), timeout=60)

    with running(sink_settings(stack.bootstrap, stack.topics, url)) as sink:
        answer = preview(stack, {"account": account})
        assert answer.status_code == 200, answer.text
        [bill] = answer.json()["data"]
        # pro: 99.00 standing charge; calls at 0.0015 plus a 5.00 platform fee
        calls = Decimal(hours * CALLS_PER_HOUR)
        assert Decimal(bill["total"]) == Decimal("99.00") + calls * Decimal("0.0015") + 5
        assert bill["version"] == 1

        assert bills_on_the_topic(stack, account) == []
        assert handled(sink) == 0
        assert [i for i in stripe_state(url)["invoiceitems"] if i["customer"] == account] == []

        # The same bill, run for real, is published and reaches Stripe (the sink listens).
        run_bills(stack, account)
        [published] = stack.wait_for(lambda: bills_on_the_topic(stack, account))
        assert (published["id"], published["total"]) == (bill["id"], bill["total"])
        assert published["lines"] == bill["lines"]

        def stripe_total() -> int | None:
            items = [i for i in stripe_state(url)["invoiceitems"] if i["customer"] == account]
            return sum(i["amount"] for i in items) if len(items) == len(bill["lines"]) else None

        expected = to_stripe_amount(Decimal(bill["total"]), bill["currency"])
        assert stack.wait_for(stripe_total, timeout=60) == expected


def test_a_preview_names_the_unknown_account_and_a_date_without_a_plan(stack: Stack) -> None:
    account = f"cus_prev_{uuid.uuid4().hex[:8]}"
    start = now_s() - DAY
    subscribe(stack, account, "pro_monthly", (start, start + 30 * DAY))
    stack.wait_for(lambda: preview(stack, {"account": account}).status_code == 200)

    unknown = preview(stack, {"account": "cus_nobody"})
    assert unknown.status_code == 404
    assert unknown.json()["field"] == "account"

    before = datetime.fromtimestamp(start - 2 * DAY, UTC).date().isoformat()
    no_plan = preview(stack, {"account": account, "at": before})
    assert no_plan.status_code == 404
    assert no_plan.json()["field"] == "at"
    assert "has no account plan on" in no_plan.json()["message"]

    bad = preview(stack, {"account": account, "at": "2026-11-20T10:00"})
    assert (bad.status_code, bad.json()["field"]) == (400, "at")
