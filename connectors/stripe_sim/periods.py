"""Billing period boundaries: the n-th boundary is computed from the anchor, like Stripe,
so a subscription anchored on the 31st bills on the last day of shorter months."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

from connectors.stripe_sim.records import Period, Recurring


def boundary(anchor: int, recurring: Recurring, n: int) -> int:
    start = datetime.fromtimestamp(anchor, UTC)
    steps = recurring.interval_count * n
    if recurring.interval == "day":
        return int((start + timedelta(days=steps)).timestamp())
    if recurring.interval == "week":
        return int((start + timedelta(weeks=steps)).timestamp())
    months = steps * 12 if recurring.interval == "year" else steps
    year, month = divmod(start.month - 1 + months, 12)
    year += start.year
    day = min(start.day, calendar.monthrange(year, month + 1)[1])
    return int(start.replace(year=year, month=month + 1, day=day).timestamp())


def nth_period(anchor: int, recurring: Recurring, n: int) -> Period:
    return Period(boundary(anchor, recurring, n), boundary(anchor, recurring, n + 1))
