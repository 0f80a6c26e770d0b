"""Billing periods in UTC and proration of partial periods.

Periods are half-open `[start, end)`. Monthly and annual periods step by calendar
months from an anchor whose day is clamped to short months and restored after them
(anchored on Jan 31: Feb 28 or 29, then Mar 31), as Stripe's billing cycle anchor does.
Every datetime must be timezone-aware; a naive one is rejected, never guessed.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import NamedTuple

from streams.schemas.accounts import AccountPlan
from streams.schemas.catalog import BillFrequency, Plan

_MONTHS = {BillFrequency.MONTHLY: 1, BillFrequency.ANNUALLY: 12}
_FIXED = {BillFrequency.DAILY: timedelta(days=1), BillFrequency.WEEKLY: timedelta(weeks=1)}
_MICROSECOND = timedelta(microseconds=1)
_WHOLE = Fraction(1)


class Period(NamedTuple):
    start: datetime
    end: datetime

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


def utc(value: datetime, name: str = "datetime") -> datetime:
    """`value` in UTC; raise ValueError naming `name` if it has no timezone."""
    if value.tzinfo is UTC:  # already (most of a bill run's datetimes)
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(UTC)


def add_months(anchor: datetime, months: int) -> datetime:
    """`anchor` moved by whole calendar months, its day clamped to the target month."""
    years, month_index = divmod(anchor.month - 1 + months, 12)
    year, month = anchor.year + years, month_index + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def period_containing(anchor: datetime, frequency: BillFrequency, at: datetime) -> Period:
    """The period of the grid anchored at `anchor` that contains `at` (either side of it)."""
    anchor, at = utc(anchor, "anchor"), utc(at, "at")
    fixed = _FIXED.get(frequency)
    if fixed is not None:
        start = anchor + fixed * ((at - anchor) // fixed)
        return Period(start, start + fixed)
    step = _MONTHS[frequency]
    n = ((at.year - anchor.year) * 12 + at.month - anchor.month) // step
    # The month count is off by at most one period when `at` is before the anchor's day.
    while add_months(anchor, n * step) > at:
        n -= 1
    while add_months(anchor, (n + 1) * step) <= at:
        n += 1
    return Period(add_months(anchor, n * step), add_months(anchor, (n + 1) * step))


def billing_period(account_plan: AccountPlan, plan: Plan, at: datetime) -> Period:
    """The billing period of `account_plan` that contains `at`.

    Stripe's current period (currentPeriodStart/End) wins when `at` falls inside it.
    Otherwise the grid is anchored on the first of startDate, currentPeriodStart,
    currentPeriodEnd that reproduces Stripe's current period (a billing cycle anchor
    other than the start date, or a day clamped in a short month, shifts the grid), so
    earlier and later periods line up with Stripe's; with no current period, startDate.
    """
    at = utc(at, "at")
    start, end = account_plan.currentPeriodStart, account_plan.currentPeriodEnd
    if start is None or end is None:
        return period_containing(account_plan.startDate, plan.billFrequency, at)
    current = Period(utc(start, "currentPeriodStart"), utc(end, "currentPeriodEnd"))
    if current.contains(at):
        return current
    for anchor in (account_plan.startDate, current.start, current.end):
        if period_containing(anchor, plan.billFrequency, current.start) == current:
            return period_containing(anchor, plan.billFrequency, at)
    return period_containing(current.start, plan.billFrequency, at)


def covered(period: Period, start: datetime, end: datetime | None) -> Period | None:
    """The part of `period` inside `[start, end)` (`end=None`: open-ended), or None."""
    lo = max(period.start, utc(start, "startDate"))
    hi = period.end if end is None else min(period.end, utc(end, "endDate"))
    return Period(lo, hi) if lo < hi else None


def proration(period: Period, start: datetime, end: datetime | None) -> Fraction:
    """The exact fraction of `period`'s time (to the microsecond) inside `[start, end)`."""
    part = covered(period, start, end)
    if part is None:
        return Fraction(0)
    if part == period:
        return _WHOLE
    return Fraction(part.duration // _MICROSECOND, period.duration // _MICROSECOND)
