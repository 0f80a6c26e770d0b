from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.billing.periods import Period, billing_period, period_containing, proration
from streams.schemas.accounts import AccountPlan
from streams.schemas.catalog import BillFrequency, Plan


def t(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def account_plan(**overrides: Any) -> AccountPlan:
    fields: dict[str, Any] = {
        "id": "sub_1",
        "accountCode": "cus_1",
        "planCode": "pro",
        "status": "ACTIVE",
        "startDate": t(2024, 1, 10),
    }
    return AccountPlan.model_validate({**fields, **overrides})


MONTHLY = Plan(code="pro", currency="USD", billFrequency=BillFrequency.MONTHLY)


@pytest.mark.parametrize(
    ("anchor", "at", "start", "end"),
    [
        # anchored on the 31st: clamped in short months, restored after them
        (t(2024, 1, 31), t(2024, 2, 15), t(2024, 1, 31), t(2024, 2, 29)),
        (t(2024, 1, 31), t(2024, 3, 5), t(2024, 2, 29), t(2024, 3, 31)),
        (t(2024, 1, 31), t(2024, 4, 30), t(2024, 4, 30), t(2024, 5, 31)),
        (t(2025, 1, 31), t(2025, 2, 15), t(2025, 1, 31), t(2025, 2, 28)),
        (t(2025, 1, 31), t(2025, 12, 31), t(2025, 12, 31), t(2026, 1, 31)),
        # the anchor's time of day is kept; a boundary instant opens the next period
        (t(2024, 1, 15, 12), t(2024, 2, 15, 12), t(2024, 2, 15, 12), t(2024, 3, 15, 12)),
        (t(2024, 1, 15, 12), t(2024, 2, 15, 11), t(2024, 1, 15, 12), t(2024, 2, 15, 12)),
        # before the anchor
        (t(2024, 3, 31), t(2024, 2, 10), t(2024, 1, 31), t(2024, 2, 29)),
    ],
)
def test_monthly_periods_follow_the_calendar_from_the_anchor(
    anchor: datetime, at: datetime, start: datetime, end: datetime
) -> None:
    assert period_containing(anchor, BillFrequency.MONTHLY, at) == Period(start, end)


@pytest.mark.parametrize(
    ("at", "start", "end"),
    [
        (t(2024, 6, 1), t(2024, 2, 29), t(2025, 2, 28)),
        (t(2025, 3, 1), t(2025, 2, 28), t(2026, 2, 28)),
        (t(2028, 3, 1), t(2028, 2, 29), t(2029, 2, 28)),
    ],
)
def test_annual_periods_anchored_on_a_leap_day(
    at: datetime, start: datetime, end: datetime
) -> None:
    assert period_containing(t(2024, 2, 29), BillFrequency.ANNUALLY, at) == Period(start, end)


@pytest.mark.parametrize(
    ("frequency", "at", "start", "end"),
    [
        (BillFrequency.DAILY, t(2024, 3, 5, 7), t(2024, 3, 5, 6), t(2024, 3, 6, 6)),
        (BillFrequency.DAILY, t(2024, 3, 5, 5), t(2024, 3, 4, 6), t(2024, 3, 5, 6)),
        (BillFrequency.WEEKLY, t(2024, 3, 20), t(2024, 3, 18, 6), t(2024, 3, 25, 6)),
        (BillFrequency.WEEKLY, t(2024, 2, 1), t(2024, 1, 29, 6), t(2024, 2, 5, 6)),
    ],
)
def test_daily_and_weekly_periods_step_from_the_anchor(
    frequency: BillFrequency, at: datetime, start: datetime, end: datetime
) -> None:
    # 2024-03-04 06:00 is a Monday
    assert period_containing(t(2024, 3, 4, 6), frequency, at) == Period(start, end)


@given(
    anchor=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)),
    at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)),
    frequency=st.sampled_from(list(BillFrequency)),
)
def test_the_period_contains_at_and_the_next_one_starts_where_it_ends(
    anchor: datetime, at: datetime, frequency: BillFrequency
) -> None:
    anchor, at = anchor.replace(tzinfo=UTC), at.replace(tzinfo=UTC)
    period = period_containing(anchor, frequency, at)
    assert period.contains(at)
    assert period_containing(anchor, frequency, period.end).start == period.end


def test_periods_are_computed_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    period = period_containing(
        datetime(2024, 1, 1, 1, tzinfo=paris), BillFrequency.MONTHLY, t(2024, 1, 20)
    )
    assert period == Period(t(2024, 1, 1), t(2024, 2, 1))
    assert period.start.tzinfo is UTC


def test_a_naive_datetime_is_rejected_with_its_name() -> None:
    with pytest.raises(ValueError, match="at: must be timezone-aware"):
        period_containing(t(2024, 1, 1), BillFrequency.MONTHLY, datetime(2024, 1, 5))


def test_billing_period_prefers_stripes_current_period() -> None:
    plan = account_plan(currentPeriodStart=t(2024, 2, 1), currentPeriodEnd=t(2024, 3, 1))
    assert billing_period(plan, MONTHLY, t(2024, 2, 20)) == Period(t(2024, 2, 1), t(2024, 3, 1))


def test_billing_period_without_a_current_period_is_anchored_on_the_start_date() -> None:
    assert billing_period(account_plan(), MONTHLY, t(2024, 3, 20)) == Period(
        t(2024, 3, 10), t(2024, 4, 10)
    )


@pytest.mark.parametrize(
    ("overrides", "at", "start", "end"),
    [
        # billing cycle anchored on the 1st while the subscription started on the 10th
        ({"currentPeriodStart": t(2024, 2, 1), "currentPeriodEnd": t(2024, 3, 1)},
         t(2024, 1, 20), t(2024, 1, 1), t(2024, 2, 1)),
        ({"currentPeriodStart": t(2024, 2, 1), "currentPeriodEnd": t(2024, 3, 1)},
         t(2024, 3, 5), t(2024, 3, 1), t(2024, 4, 1)),
        # cycle anchored on the 31st, current period starts on a clamped Feb 29
        ({"currentPeriodStart": t(2024, 2, 29), "currentPeriodEnd": t(2024, 3, 31)},
         t(2024, 4, 15), t(2024, 3, 31), t(2024, 4, 30)),
        # the start date's own grid agrees with Stripe: it is used
        ({"currentPeriodStart": t(2024, 2, 10), "currentPeriodEnd": t(2024, 3, 10)},
         t(2024, 4, 15), t(2024, 4, 10), t(2024, 5, 10)),
    ],
)  # fmt: skip
def test_billing_period_outside_the_current_period_lines_up_with_stripes_cycle(
    overrides: dict[str, Any], at: datetime, start: datetime, end: datetime
) -> None:
    assert billing_period(account_plan(**overrides), MONTHLY, at) == Period(start, end)


APRIL = Period(t(2024, 4, 1), t(2024, 5, 1))  # 30 days


@pytest.mark.parametrize(
    ("start", "end", "fraction"),
    [
        (t(2024, 1, 1), None, Fraction(1)),
        (t(2024, 4, 1), t(2024, 5, 1), Fraction(1)),
        (t(2024, 4, 16), None, Fraction(1, 2)),  # starts mid-period
        (t(2024, 3, 1), t(2024, 4, 11), Fraction(1, 3)),  # ends mid-period
        (t(2024, 4, 11), t(2024, 4, 21), Fraction(1, 3)),  # both inside
        (t(2024, 4, 30, 12), None, Fraction(1, 60)),
        (t(2024, 5, 1), None, Fraction(0)),  # starts after
        (t(2024, 1, 1), t(2024, 4, 1), Fraction(0)),  # ended before
    ],
)
def test_proration_is_the_exact_share_of_the_period_covered(
    start: datetime, end: datetime | None, fraction: Fraction
) -> None:
    assert proration(APRIL, start, end) == fraction
