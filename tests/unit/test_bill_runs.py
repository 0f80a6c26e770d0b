"""What a bill run does for one account plan: periods, finalization, the lock index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from streams.billing.bills import transition
from streams.billing.runs import (
    UsageReader,
    finalize,
    locked_ranges,
    locked_reason,
    periods_to_bill,
    run_account_plan,
    updated_index,
)
from streams.schemas.accounts import AccountPlan, AccountPlanStatus
from streams.schemas.bill import Bill, BillStatus
from streams.schemas.catalog import Catalog

CATALOG = Catalog.from_documents(
    yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "streams" / "catalog" / "example.yaml").read_text()
    )
)
START = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
MONTH_END = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)


def account_plan(**fields: Any) -> AccountPlan:
    values: dict[str, Any] = {
        "id": "sub_1",
        "accountCode": "cus_1",
        "planCode": "starter",
        "status": AccountPlanStatus.ACTIVE,
        "startDate": START,
        "currentPeriodStart": MONTH_END,
        "currentPeriodEnd": datetime(2026, 12, 5, 12, 0, tzinfo=UTC),
        "stripeSubscriptionId": "sub_1",
    }
    values.update(fields)
    return AccountPlan(**values)


def no_usage(*_: Any) -> dict[str, Decimal | None]:
    return {}


def test_a_run_bills_the_current_period_and_the_one_before_it() -> None:
    periods = periods_to_bill(account_plan(), CATALOG, datetime(2026, 11, 20, tzinfo=UTC))
    assert [(p.start, p.end) for p in periods] == [
        (START, MONTH_END),
        (MONTH_END, datetime(2026, 12, 5, 12, 0, tzinfo=UTC)),
    ]


def test_the_first_period_has_no_period_before_it() -> None:
    plan = account_plan(currentPeriodStart=START, currentPeriodEnd=MONTH_END)
    assert len(periods_to_bill(plan, CATALOG, START + timedelta(days=3))) == 1


def test_an_ended_plan_bills_its_last_period_and_nothing_after_it() -> None:
    ended = account_plan(endDate=datetime(2026, 11, 10, tzinfo=UTC), status=AccountPlanStatus.ENDED)
    periods = periods_to_bill(ended, CATALOG, datetime(2027, 3, 1, tzinfo=UTC))
    assert periods[-1].start == MONTH_END


def test_unmapped_and_future_plans_bill_nothing() -> None:
    unmapped = account_plan(planCode=None, status=AccountPlanStatus.UNMAPPED)
    assert periods_to_bill(unmapped, CATALOG, datetime(2026, 11, 20, tzinfo=UTC)) == []
    assert periods_to_bill(account_plan(), CATALOG, START - timedelta(days=1)) == []


def first_bill(now: datetime, catalog: Catalog = CATALOG, usage: UsageReader = no_usage) -> Bill:
    result = run_account_plan(
        account_plan=account_plan(currentPeriodStart=START, currentPeriodEnd=MONTH_END),
        account=None,
        catalog=catalog,
        previous={},
        usage=usage,
        now=now,
    )
    assert len(result.bills) == 1
    return result.bills[0]


def test_a_bill_is_finalized_only_after_the_grace_period_and_as_configured() -> None:
    bill = first_bill(START + timedelta(days=3))
    grace = timedelta(hours=6)
    assert finalize(bill, MONTH_END + timedelta(hours=5), grace, True, True) == []
    done = finalize(bill, MONTH_END + timedelta(hours=7), grace, True, True)
    assert [b.status for b in done] == [BillStatus.APPROVED, BillStatus.LOCKED]
    assert [b.version for b in done] == [bill.version + 1, bill.version + 2]
    only_approve = finalize(bill, MONTH_END + timedelta(hours=7), grace, True, False)
    assert [b.status for b in only_approve] == [BillStatus.APPROVED]
    assert finalize(bill, MONTH_END + timedelta(hours=7), grace, False, True) == []


def test_a_locked_bill_is_not_regenerated_and_its_period_rejects_usage() -> None:
    bill = first_bill(START + timedelta(days=3))
    locked = transition(transition(bill, BillStatus.APPROVED, START), BillStatus.LOCKED, START)
    rerun = run_account_plan(
        account_plan=account_plan(currentPeriodStart=START, currentPeriodEnd=MONTH_END),
        account=None,
        catalog=CATALOG,
        previous={locked.id: locked},
        usage=lambda *_: {"api_calls": Decimal(5000)},
        now=START + timedelta(days=4),
    )
    assert rerun.bills == []
    assert rerun.skipped == [f"{locked.id} is locked"]
    index = updated_index(updated_index(None, [bill]), [locked])
    ranges = locked_ranges(index)
    inside = int((START + timedelta(days=1)).timestamp() * 1000)
    outside = int((MONTH_END + timedelta(days=1)).timestamp() * 1000)
    reason = locked_reason(ranges, inside)
    assert reason is not None and "is locked" in reason and locked.id in reason
    assert locked_reason(ranges, outside) is None
    assert locked_reason(locked_ranges(updated_index(None, [bill])), inside) is None


def test_a_partial_first_period_keeps_its_bill_after_the_renewal() -> None:
    created = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    anchor = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)  # Checkout with a future billing anchor
    during = account_plan(startDate=created, currentPeriodStart=created, currentPeriodEnd=anchor)
    renewed = account_plan(
        startDate=created,
        currentPeriodStart=anchor,
        currentPeriodEnd=datetime(2027, 1, 1, tzinfo=UTC),
    )
    first = periods_to_bill(during, CATALOG, created + timedelta(days=2))
    after = periods_to_bill(renewed, CATALOG, anchor + timedelta(minutes=5))
    assert [(p.start, p.end) for p in first] == [(created, anchor)]
    assert (after[0].start, after[0].end) == (created, anchor)
    assert after[1].start == anchor


def test_a_new_catalog_bills_with_its_aggregations_not_the_ones_of_the_last_catalog() -> None:
    def usage(account: str, functions: Any, start: int, end: int) -> dict[str, Decimal | None]:
        # 7 calls in all, at most 3 at once
        return {code: Decimal(3 if fn == "MAX" else 7) for code, fn in functions.items()}

    def calls(catalog: Catalog) -> Decimal | None:
        bill = first_bill(START + timedelta(days=2), catalog, usage)
        return {line.id: line.quantity for line in bill.lines}["USAGE:api_calls"]

    document = CATALOG.model_dump(mode="json")
    document["aggregations"]["api_calls"]["aggregation"] = "MAX"

    assert calls(CATALOG) == 7
    assert calls(Catalog.model_validate(document)) == 3
    assert calls(CATALOG) == 7
