"""Bills from usage, and their lifecycle: pure functions the billing agent calls.

`build_bill` prices one account plan's billing period and returns the next version of
its bill, or None when nothing but the generation time would change. `transition`
approves and locks. Lines, in order:

- STANDING_CHARGE: the plan's standing charge times the fraction of the period the
  account plan covers (by time). Billed in advance or in arrears it is the same
  amount for the same dates, the covered part of this period: bills are recalculated
  all period long, so "in advance" only labels the line (and lets the sink push it
  as soon as the period opens).
- USAGE: one per pricing of the plan, in the plan's order, even at zero usage. A pricing
  of a compound aggregation prices its calculated value (`streams.billing.compound`).
- COUNTER_RUNNING_TOTAL_CHARGE, COUNTER_ADJUSTMENT_DEBIT / _CREDIT: per counter pricing of
  the plan, in the plan's order (`streams.billing.counters`).
- MINIMUM_SPEND: when the usage lines add up to less than the plan's minimum spend
  (prorated like the standing charge), the difference. Counter charges are recurring
  charges, not usage: they do not count towards the minimum spend.
- COMMITMENT_FEE, OVERAGE_USAGE, COMMITMENT_CONSUMED, BALANCE_CONSUMED: what the account's
  commitment and credit grants add and pay (`streams.billing.credits`).

Each line's subtotal is rounded half-up to the currency's minor unit once; the total
is the sum of the rounded lines, so it is exact in minor units too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Any

from streams.billing.compound import compound_values
from streams.billing.counters import CountChange, counter_lines
from streams.billing.credits import NO_CREDITS, Credits, apply_credits
from streams.billing.periods import Period, covered, proration, utc
from streams.billing.pricing import price, quantity
from streams.money import prorate, round_money
from streams.schemas.accounts import Account, AccountPlan
from streams.schemas.bill import Bill, BillLine, BillReason, BillStatus, LineItemType
from streams.schemas.catalog import (
    DEFAULT_SEGMENT,
    Aggregation,
    CompoundAggregation,
    Counter,
    Plan,
    Pricing,
    segment_id,
)

STANDING_CHARGE_LINE = "STANDING_CHARGE"
MINIMUM_SPEND_LINE = "MINIMUM_SPEND"
# Fields a recalculation produces; a new version is emitted only when one of them differs.
_CALCULATED = (
    "accountCode",
    "planCode",
    "currency",
    "startDate",
    "endDate",
    "lines",
    "total",
    "stripeCustomerId",
    "stripeSubscriptionId",
)
_NEXT_STATUS = {BillStatus.PENDING: BillStatus.APPROVED, BillStatus.APPROVED: BillStatus.LOCKED}


class LifecycleError(Exception):
    """A status change (or recalculation) the bill lifecycle forbids, with the reason."""

    def __init__(self, bill_id: str, reason: str) -> None:
        self.bill_id = bill_id
        self.reason = reason
        super().__init__(f"bill {bill_id}: {reason}")


class BillLocked(LifecycleError):
    """The bill is LOCKED: it is never recalculated, and usage for its period is refused."""

    def __init__(self, bill: Bill) -> None:
        super().__init__(
            bill.id, f"is LOCKED (version {bill.version}); a locked bill never changes"
        )
        self.version = bill.version


@lru_cache(maxsize=1024)  # a run asks for each bill's id twice (its plan, then build_bill)
def bill_id(account_plan_id: str, period_start: datetime) -> str:
    """Deterministic id of the bill of an account plan for the period starting then."""
    key = f"{account_plan_id}|{utc(period_start, 'period start').isoformat()}"
    return "bill_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def usage_line_id(aggregation_code: str, segment: str | None = None) -> str:
    """`USAGE:<code>`, and for a segment `USAGE:<code>:<segment id>` (a segment id longer
    than 200 characters is replaced by `#` and its sha256, to fit Stripe's metadata)."""
    if segment is None:
        return f"{LineItemType.USAGE}:{aggregation_code}"
    if len(segment) > 200:
        segment = "#" + hashlib.sha256(segment.encode()).hexdigest()[:24]
    return f"{LineItemType.USAGE}:{aggregation_code}:{segment}"


@dataclass(frozen=True)
class Extras:
    """What a plan may price beside aggregations: compound aggregations (by code), and
    counters (by code) with each counter's history for the account."""

    compounds: Mapping[str, CompoundAggregation] = field(default_factory=dict)
    counters: Mapping[str, Counter] = field(default_factory=dict)
    counts: Mapping[str, Sequence[CountChange]] = field(default_factory=dict)
    # the period's value per (segmented aggregation, segment id) with usage
    segments: Mapping[tuple[str, str], Decimal | None] = field(default_factory=dict)


NO_EXTRAS = Extras()


def build_bill(
    *,
    account_plan: AccountPlan,
    plan: Plan,
    aggregations: Mapping[str, Aggregation],
    usage: Mapping[str, Decimal | None],
    period: Period,
    previous: Bill | None,
    now: datetime,
    account: Account | None = None,
    extras: Extras = NO_EXTRAS,
    credits: Credits = NO_CREDITS,
) -> Bill | None:
    """The next version of the bill of `account_plan` for `period`, or None if unchanged.

    `usage` holds the aggregated value per aggregation code over the period (missing or
    None: no usage); `aggregations` every aggregation the plan prices or its compound
    aggregations reference. A recalculation that changes an APPROVED bill puts it back to
    PENDING. Raises `BillLocked` if `previous` is LOCKED, ValueError for inputs that do
    not belong together (plan, period, previous bill) or a period the plan never covers.
    """
    if account_plan.planCode != plan.code:
        raise ValueError(
            f"plan: account plan {account_plan.id} is on plan {account_plan.planCode!r}, "
            f"not {plan.code!r}"
        )
    this_id = bill_id(account_plan.id, period.start)
    if previous is not None:
        if previous.id != this_id:
            raise ValueError(f"previous: bill {previous.id} is not this period's bill {this_id}")
        if previous.status is BillStatus.LOCKED:
            raise BillLocked(previous)
    service = covered(period, account_plan.startDate, account_plan.endDate)
    if service is None:
        raise ValueError(
            f"period: account plan {account_plan.id} does not cover "
            f"[{period.start.isoformat()}, {period.end.isoformat()})"
        )
    fraction = proration(period, account_plan.startDate, account_plan.endDate)
    period = Period(utc(period.start, "period start"), utc(period.end, "period end"))
    service = Period(utc(service.start), utc(service.end))
    lines = _lines(plan, aggregations, usage, period, service, fraction, extras)
    lines = apply_credits(lines, plan, credits, service)
    content: dict[str, Any] = {
        "accountCode": account_plan.accountCode,
        "planCode": plan.code,
        "currency": plan.currency,
        "startDate": period.start,
        "endDate": period.end,
        "lines": lines,
        "total": sum((line.subtotal for line in lines), round_money(Decimal(0), plan.currency)),
        "stripeCustomerId": account.stripeCustomerId if account else None,
        "stripeSubscriptionId": account_plan.stripeSubscriptionId,
    }
    now = utc(now, "now")
    if previous is None:
        return Bill.strict(
            id=this_id,
            version=1,
            status=BillStatus.PENDING,
            generatedAt=now,
            statusChangedAt=now,
            reason=BillReason.CREATED,
            accountPlanId=account_plan.id,
            **content,
        )
    if all(getattr(previous, name) == content[name] for name in _CALCULATED):
        return None
    reopened = previous.status is not BillStatus.PENDING
    return Bill.strict(
        id=this_id,
        version=previous.version + 1,
        status=BillStatus.PENDING,
        generatedAt=now,
        statusChangedAt=now if reopened else previous.statusChangedAt,
        reason=BillReason.RECALCULATED,
        accountPlanId=account_plan.id,
        **content,
    )


def transition(
    bill: Bill, target: BillStatus, now: datetime, *, expected_version: int | None = None
) -> Bill:
    """`bill` moved to `target`, as a new version; raise `LifecycleError` if forbidden.

    Allowed: PENDING -> APPROVED -> LOCKED. Locking needs an approved bill (nobody locks
    numbers no one reviewed), and nothing leaves LOCKED. A bill already in `target` is
    returned as is (same version): a redelivered command changes nothing. Pass
    `expected_version` (the version the user reviewed) to refuse a bill that has been
    recalculated since.
    """
    if expected_version is not None and expected_version != bill.version:
        raise LifecycleError(
            bill.id,
            f"expected version {expected_version} but the bill is at version {bill.version}",
        )
    if target == bill.status:
        return bill
    if _NEXT_STATUS.get(bill.status) != target:
        raise LifecycleError(bill.id, _forbidden(bill.status, target))
    now = utc(now, "now")
    return bill.model_copy(
        update={
            "status": target,
            "version": bill.version + 1,
            "statusChangedAt": now,
            "reason": BillReason.STATUS,
        }
    )


def _forbidden(current: BillStatus, target: BillStatus) -> str:
    if current is BillStatus.LOCKED:
        return f"cannot move from LOCKED to {target}: a locked bill never changes"
    if target is BillStatus.LOCKED:
        return "cannot lock a PENDING bill: approve it first"
    return f"cannot move from {current} to {target}: only a recalculation reopens a bill"


def _lines(
    plan: Plan,
    aggregations: Mapping[str, Aggregation],
    usage: Mapping[str, Decimal | None],
    period: Period,
    service: Period,
    fraction: Fraction,
    extras: Extras,
) -> tuple[BillLine, ...]:
    currency = plan.currency
    lines: list[BillLine] = []
    if plan.standingCharge > 0:
        description = plan.standingChargeDescription or "Standing charge"
        if plan.standingChargeBilledInAdvance:
            description += " (in advance)"
        lines.append(
            BillLine.strict(
                id=STANDING_CHARGE_LINE,
                lineItemType=LineItemType.STANDING_CHARGE,
                description=description,
                subtotal=round_money(prorate(plan.standingCharge, fraction), currency),
                servicePeriodStartDate=service.start,
                servicePeriodEndDate=service.end,
            )
        )
    usage_lines = _usage_lines(plan, aggregations, usage, service, extras)
    lines.extend(usage_lines)
    for counter_pricing in plan.counterPricings:
        counter = extras.counters.get(counter_pricing.counter)
        if counter is None:
            raise ValueError(
                f"plans[{plan.code}].counterPricings: counter {counter_pricing.counter!r} "
                "is not in the catalog"
            )
        history = extras.counts.get(counter.code, ())
        lines.extend(counter_lines(counter_pricing, counter, history, period, service, currency))
    if plan.minimumSpend > 0:
        usage_total = sum((line.subtotal for line in usage_lines), Decimal(0))
        shortfall = round_money(prorate(plan.minimumSpend, fraction), currency) - usage_total
        if shortfall > 0:
            lines.append(
                BillLine.strict(
                    id=MINIMUM_SPEND_LINE,
                    lineItemType=LineItemType.MINIMUM_SPEND,
                    description=plan.minimumSpendDescription or "Minimum spend",
                    subtotal=shortfall,
                    servicePeriodStartDate=service.start,
                    servicePeriodEndDate=service.end,
                )
            )
    return tuple(lines)


def _usage_lines(
    plan: Plan,
    aggregations: Mapping[str, Aggregation],
    usage: Mapping[str, Decimal | None],
    service: Period,
    extras: Extras,
) -> list[BillLine]:
    compounds = [p.compoundAggregation for p in plan.pricings if p.compoundAggregation]
    for code in compounds:
        if code not in extras.compounds:
            raise ValueError(
                f"plans[{plan.code}].pricings: compound aggregation {code!r} is not in the catalog"
            )
    values = {
        **usage,
        **compound_values(compounds, extras.compounds, aggregations, usage),
    }
    lines: list[BillLine] = []
    for pricing in plan.pricings:
        code = pricing.priced
        priced_thing: Aggregation | CompoundAggregation | None = (
            aggregations.get(code) if pricing.aggregation else extras.compounds.get(code)
        )
        if priced_thing is None:
            raise ValueError(
                f"plans[{plan.code}].pricings: aggregation {code!r} is not in the catalog"
            )
        if isinstance(priced_thing, Aggregation) and priced_thing.segmented:
            lines.extend(segment_lines(plan, pricing, priced_thing, extras.segments, service))
            continue
        raw = values.get(code)
        priced = price(pricing, quantity(raw, priced_thing))
        default = priced_thing.defaultValue if isinstance(priced_thing, Aggregation) else None
        lines.append(
            BillLine.strict(
                id=usage_line_id(code),
                lineItemType=LineItemType.USAGE,
                description=pricing.description or priced_thing.name or code,
                aggregationCode=pricing.aggregation,
                compoundAggregationCode=pricing.compoundAggregation,
                quantity=default if raw is None else raw,
                units=priced.units,
                unitPrice=priced.unit_price,
                subtotal=round_money(priced.total, plan.currency),
                usagePerPricingBand=priced.bands,
                servicePeriodStartDate=service.start,
                servicePeriodEndDate=service.end,
            )
        )
    return lines


def segment_lines(
    plan: Plan,
    pricing: Pricing,
    aggregation: Aggregation,
    values: Mapping[tuple[str, str], Decimal | None],
    service: Period,
) -> list[BillLine]:
    """The USAGE lines of a pricing of a segmented aggregation: one for the segment it
    names, or, without one, one per segment no other pricing of the plan names (the
    listed segments in order, then the default one), each even at zero usage."""
    code = aggregation.code
    segments: list[Mapping[str, str]]
    if pricing.segment is not None:
        segments = [pricing.segment]
    else:
        named = {p.segment_key for p in plan.pricings if p.aggregation == code}
        segments = [
            segment
            for segment in (*aggregation.segments, DEFAULT_SEGMENT)
            if segment_id(segment) not in named
        ]
    lines = []
    for segment in segments:
        key = segment_id(segment)
        raw = values.get((code, key))
        priced = price(pricing, quantity(raw, aggregation))
        described = ", ".join(f"{field}: {value}" for field, value in segment.items())
        lines.append(
            BillLine.strict(
                id=usage_line_id(code, key),
                lineItemType=LineItemType.USAGE,
                description=f"{pricing.description or aggregation.name or code} "
                f"({described or 'other'})",
                aggregationCode=code,
                segment=dict(segment),
                quantity=aggregation.defaultValue if raw is None else raw,
                units=priced.units,
                unitPrice=priced.unit_price,
                subtotal=round_money(priced.total, plan.currency),
                usagePerPricingBand=priced.bands,
                servicePeriodStartDate=service.start,
                servicePeriodEndDate=service.end,
            )
        )
    return lines
