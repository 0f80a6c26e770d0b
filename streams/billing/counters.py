"""Counter pricing: a counter's history in a billing period → recurring charge lines. Pure.

A counter's history is its adjustments: from each moment on, the account has that many
units (absolute values, as m3ter's counter adjustments). For the part of the period the
account plan covers, `[service start, service end)`:

- COUNTER_RUNNING_TOTAL_CHARGE: the count at the service start, priced with the
  pricing's bands, times the covered fraction of the period (`proRateRunningTotal`;
  false: the whole period's price). Always present, 0 when the count is 0.
- one adjustment line per change of the count inside the service period: the price of the
  new count minus the price of the old one, times the fraction of the period from the
  change to the service end (`proRateAdjustmentDebit` / `proRateAdjustmentCredit`; false:
  the whole difference). A positive difference is a COUNTER_ADJUSTMENT_DEBIT, a negative
  one a COUNTER_ADJUSTMENT_CREDIT (a negative subtotal, a negative Stripe invoice item).

Each line is rounded once to the currency's minor unit. Counters never take a bill below
zero: when one counter's lines add up to less than zero (possible with the proration
flags, or rounding), its credits are reduced, latest first, until they add up to zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

from streams.billing.periods import Period
from streams.billing.pricing import price
from streams.money import prorate, round_money
from streams.schemas.bill import BillLine, LineItemType
from streams.schemas.catalog import Counter, CounterPricing

_ZERO = Decimal(0)
_MICROSECOND = timedelta(microseconds=1)
_WHOLE = Fraction(1)


class CountChange(NamedTuple):
    """From `at` on, the account has `value` units of the counter."""

    at: datetime
    value: int


def running_total_line_id(counter: str) -> str:
    return f"{LineItemType.COUNTER_RUNNING_TOTAL_CHARGE}:{counter}"


def adjustment_line_id(counter: str, at: datetime) -> str:
    """Stable whether the change is a debit or a credit: one Stripe item per adjustment."""
    return f"COUNTER_ADJUSTMENT:{counter}:{at.isoformat()}"


def count_at(history: Sequence[CountChange], moment: datetime) -> int:
    """The count in force at `moment` (the last change at or before it; 0 before any)."""
    value = 0
    for change in history:
        if change.at > moment:
            break
        value = change.value
    return value


def counter_lines(
    pricing: CounterPricing,
    counter: Counter,
    history: Sequence[CountChange],
    period: Period,
    service: Period,
    currency: str,
) -> list[BillLine]:
    """The running total and adjustment lines of one counter pricing (see the module)."""
    ordered = sorted(history)
    name = pricing.description or counter.name or counter.code
    unit = f" {counter.unit}" if counter.unit else ""
    start_count = count_at(ordered, service.start)
    priced = price(pricing, Decimal(start_count))
    covered = _fraction(service.duration, period) if pricing.proRateRunningTotal else _WHOLE
    lines = [
        BillLine.strict(
            id=running_total_line_id(counter.code),
            lineItemType=LineItemType.COUNTER_RUNNING_TOTAL_CHARGE,
            description=name,
            counterCode=counter.code,
            quantity=Decimal(start_count),
            units=Decimal(start_count),
            unitPrice=priced.unit_price,
            subtotal=round_money(prorate(priced.total, covered), currency),
            usagePerPricingBand=priced.bands,
            servicePeriodStartDate=service.start,
            servicePeriodEndDate=service.end,
        )
    ]
    before, before_total = start_count, priced.total
    for change in ordered:
        if not service.start < change.at < service.end or change.value == before:
            continue
        after = price(pricing, Decimal(change.value))
        difference = after.total - before_total
        debit = difference >= 0
        prorated = pricing.proRateAdjustmentDebit if debit else pricing.proRateAdjustmentCredit
        fraction = _fraction(service.end - change.at, period) if prorated else _WHOLE
        lines.append(
            BillLine.strict(
                id=adjustment_line_id(counter.code, change.at),
                lineItemType=(
                    LineItemType.COUNTER_ADJUSTMENT_DEBIT
                    if debit
                    else LineItemType.COUNTER_ADJUSTMENT_CREDIT
                ),
                description=f"{name}: {before} → {change.value}{unit}",
                counterCode=counter.code,
                quantity=Decimal(change.value - before),
                units=Decimal(change.value),
                unitPrice=after.unit_price,
                subtotal=round_money(prorate(difference, fraction), currency),
                servicePeriodStartDate=change.at,
                servicePeriodEndDate=service.end,
            )
        )
        before, before_total = change.value, after.total
    return _never_below_zero(lines)


def _fraction(duration: timedelta, period: Period) -> Fraction:
    """`duration` as an exact fraction of the period (to the microsecond)."""
    if duration == period.duration:
        return _WHOLE
    return Fraction(duration // _MICROSECOND, period.duration // _MICROSECOND)


def _never_below_zero(lines: list[BillLine]) -> list[BillLine]:
    """Reduce the credits, latest first, so the lines never add up to less than zero."""
    shortfall = -sum((line.subtotal for line in lines), _ZERO)
    if shortfall <= 0:
        return lines
    out = list(lines)
    for index in range(len(out) - 1, -1, -1):
        line = out[index]
        if shortfall <= 0 or line.subtotal >= 0:
            continue
        taken = min(shortfall, -line.subtotal)
        out[index] = line.model_copy(update={"subtotal": line.subtotal + taken})
        shortfall -= taken
    return out
