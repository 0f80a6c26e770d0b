"""Commitments and balances on a bill: prepaid money that pays its charges. Pure.

A bill's charges (standing charge, usage, counters, minimum spend) are computed first
(`streams.billing.bills`); `apply_credits` then adds, in this order:

1. COMMITMENT_FEE: each fee of a commitment of the account and plan (the whole amount at
   its start for UP_FRONT, each instalment for INSTALMENTS) whose date falls in the
   bill's period.
2. The credits, in the plan's `creditApplicationOrder` (default: commitment, then
   balances). Each pays the charges it applies to, line by line in the bill's order,
   with what is left of it before this bill, and never more than the bill's total
   (a bill never goes below zero):
   - the commitment (the first of the account's commitments on the plan whose dates
     overlap the bill's period) pays the charges of its `lineItemTypes` (USAGE by
     default): one COMMITMENT_CONSUMED line, negative, always present on such a bill.
     The usage line it runs out in is split: the USAGE line keeps the units the
     prepaid money (commitment, and balances applied before it) paid for, at that money,
     and an OVERAGE_USAGE line prices the rest with the pricing's
     `overagePricingBands` (from 0 overage units up) or, without them, as the normal
     bands went on to price them (the line's normal subtotal minus the part paid).
     A usage line after that is all overage (a USAGE line at 0, then OVERAGE_USAGE).
   - each credit grant in the bill's currency that is in force during the period (from
     its start, before its expiry), oldest first, pays the charges of its
     `lineItemTypes` (every charge when empty): one BALANCE_CONSUMED line per grant that
     paid something, negative.
   The units the commitment paid for are where its money ran out on the normal bands:
   the largest number of units whose normal price is at most that money (exact, or to
   12 decimal places when the division does not end).

What is left of a commitment or a grant before a bill is its amount minus what the
account's other bills consumed that come before it (by period start, then account plan
id), or that are LOCKED (a locked bill's consumption never changes, whatever its
order). The caller passes the latest versions, so a recalculated bill re-flows the
later ones, and nothing is ever counted twice (`consumed_by_others`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal, Inexact, localcontext

from streams.billing.periods import Period
from streams.billing.pricing import price
from streams.money import round_money
from streams.schemas.balances import BalanceGrant
from streams.schemas.bill import Bill, BillLine, BillStatus, LineItemType
from streams.schemas.catalog import (
    Bands,
    Catalog,
    ChargeType,
    Commitment,
    PerCatalog,
    Plan,
    Pricing,
)

_ZERO = Decimal(0)
_UNIT_PLACES = Decimal("1e-12")


@dataclass(frozen=True)
class GrantLeft:
    """A credit grant and what is left of it before the bill."""

    grant: BalanceGrant
    left: Decimal


@dataclass(frozen=True)
class Credits:
    """What prepays one bill: its fees, its commitment (and what is left of it), its grants."""

    fees: tuple[tuple[Commitment, Decimal, datetime], ...] = ()  # commitment, amount, date
    commitment: Commitment | None = None
    commitment_left: Decimal = _ZERO
    grants: tuple[GrantLeft, ...] = ()
    order: tuple[str, ...] = ("COMMITMENT", "BALANCE")

    @property
    def empty(self) -> bool:
        return not self.fees and self.commitment is None and not self.grants


NO_CREDITS = Credits()


def commitment_line_id(code: str) -> str:
    return f"{LineItemType.COMMITMENT_CONSUMED}:{code}"


def fee_line_id(code: str, at: datetime) -> str:
    return f"{LineItemType.COMMITMENT_FEE}:{code}:{at.isoformat()}"


def overage_line_id(usage_line_id: str) -> str:
    return f"{LineItemType.OVERAGE_USAGE}:{usage_line_id.partition(':')[2]}"


def balance_line_id(grant_id: str) -> str:
    return f"{LineItemType.BALANCE_CONSUMED}:{grant_id}"


# --- what is left before a bill -----------------------------------------------------


def _order(bill: Bill) -> tuple[datetime, str]:
    return (bill.startDate, bill.accountPlanId)


def consumed_by_others(
    bills: Iterable[Bill], this: tuple[datetime, str], this_id: str, line_id: str
) -> Decimal:
    """What the other bills consumed through the credit line `line_id`: those before
    `this` (period start, account plan id) and every LOCKED one."""
    total = _ZERO
    for bill in bills:
        if bill.id == this_id or not (_order(bill) < this or bill.status is BillStatus.LOCKED):
            continue
        total -= sum((line.subtotal for line in bill.lines if line.id == line_id), _ZERO)
    return total


def _by_account_plan(catalog: Catalog) -> dict[tuple[str, str], list[Commitment]]:
    index: dict[tuple[str, str], list[Commitment]] = {}
    for c in sorted(catalog.commitments.values(), key=lambda c: (c.startDate, c.code)):
        index.setdefault((c.account, c.plan), []).append(c)
    return index


# The commitments of each (account, plan), for the catalog they came from: a catalog may
# hold a commitment per account, and a bill run asks this once per account.
_BY_ACCOUNT_PLAN = PerCatalog(_by_account_plan)


def commitments_of(catalog: Catalog, account: str, plan: str) -> list[Commitment]:
    """The commitments of `account` on `plan`, by startDate then code."""
    return _BY_ACCOUNT_PLAN(catalog).get((account, plan), [])


def credits_for(
    *,
    catalog: Catalog,
    plan: Plan,
    account: str,
    account_plan_id: str,
    period: Period,
    bill_id: str,
    bills: Iterable[Bill],
    grants: Sequence[BalanceGrant],
) -> Credits:
    """The credits of the bill `bill_id` of `period`, given the account's other bills."""
    mine = commitments_of(catalog, account, plan.code)
    fees = tuple(
        (c, fee.amount, fee.date) for c in mine for fee in c.fees if period.contains(fee.date)
    )
    commitment = next(
        (c for c in mine if c.startDate < period.end and period.start < c.endDate), None
    )
    live = [
        g
        for g in grants
        if g.currency == plan.currency
        and g.startDate < period.end
        and (g.expiryDate is None or period.start < g.expiryDate)
    ]
    if not fees and commitment is None and not live:
        return NO_CREDITS
    others = list(bills)
    this = (period.start, account_plan_id)
    left = _ZERO
    if commitment is not None:
        used = consumed_by_others(others, this, bill_id, commitment_line_id(commitment.code))
        left = max(commitment.amount - used, _ZERO)
    lefts = []
    for grant in sorted(live, key=lambda g: (g.startDate, g.uid)):
        used = consumed_by_others(others, this, bill_id, balance_line_id(grant.uid))
        lefts.append(GrantLeft(grant, max(grant.amount - used, _ZERO)))
    return Credits(fees, commitment, left, tuple(lefts), tuple(plan.creditApplicationOrder))


# --- applying them to a bill's lines ---------------------------------------------------


@dataclass
class _Ledger:
    """The bill's lines while credits pay them: what each line still needs paying."""

    lines: list[BillLine]
    unpaid: list[Decimal] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.unpaid = [max(line.subtotal, _ZERO) for line in self.lines]

    @property
    def room(self) -> Decimal:
        """How much more credit the bill takes before its total would go below zero."""
        return max(sum((line.subtotal for line in self.lines), _ZERO), _ZERO)

    def add(self, line: BillLine) -> None:
        """A line nothing pays: a fee or a credit."""
        self.lines.append(line)
        self.unpaid.append(max(line.subtotal, _ZERO))

    def index_of(self, line_id: str) -> int:
        return next(i for i, line in enumerate(self.lines) if line.id == line_id)

    def charges(self, types: Iterable[str]) -> list[int]:
        wanted = set(types)
        return [i for i, line in enumerate(self.lines) if line.lineItemType in wanted]


def apply_credits(
    lines: Sequence[BillLine], plan: Plan, credits: Credits, service: Period
) -> tuple[BillLine, ...]:
    """`lines` with the commitment fees, overage and credit lines (see the module)."""
    if credits.empty:
        return tuple(lines)
    ledger = _Ledger(list(lines))
    for commitment, amount, at in credits.fees:
        ledger.add(
            BillLine.strict(
                id=fee_line_id(commitment.code, at),
                lineItemType=LineItemType.COMMITMENT_FEE,
                description=commitment.description or f"Commitment {commitment.code}",
                commitmentCode=commitment.code,
                subtotal=round_money(amount, plan.currency),
                servicePeriodStartDate=service.start,
                servicePeriodEndDate=service.end,
            )
        )
    for source in credits.order:
        if source == "COMMITMENT" and credits.commitment is not None:
            ledger.add(_draw_commitment(ledger, plan, credits, service))
        elif source == "BALANCE":
            for grant in credits.grants:
                paid = _draw_grant(ledger, grant, service)
                if paid is not None:
                    ledger.add(paid)
    return tuple(ledger.lines)


def _draw_commitment(ledger: _Ledger, plan: Plan, credits: Credits, service: Period) -> BillLine:
    commitment = credits.commitment
    assert commitment is not None
    left, paid = credits.commitment_left, _ZERO
    pricings = {pricing.priced: pricing for pricing in plan.pricings}
    # by id: an overage split inserts a line, which moves the lines after it
    for line_id in [ledger.lines[i].id for i in ledger.charges(commitment.lineItemTypes)]:
        index = ledger.index_of(line_id)
        line = ledger.lines[index]
        take = max(min(left, ledger.unpaid[index], ledger.room - paid), _ZERO)
        pricing = pricings.get(line.aggregationCode or line.compoundAggregationCode or "")
        runs_out = left < ledger.unpaid[index]
        if line.lineItemType == LineItemType.USAGE and runs_out and pricing is not None:
            _split_overage(ledger, index, pricing, take, plan.currency)
        else:
            ledger.unpaid[index] -= take
        left -= take
        paid += take
    return BillLine.strict(
        id=commitment_line_id(commitment.code),
        lineItemType=LineItemType.COMMITMENT_CONSUMED,
        description=commitment.description or f"Commitment {commitment.code} consumed",
        commitmentCode=commitment.code,
        subtotal=-paid,
        creditAmount=commitment.amount,
        creditRemaining=left,
        servicePeriodStartDate=service.start,
        servicePeriodEndDate=service.end,
    )


def _split_overage(
    ledger: _Ledger, index: int, pricing: Pricing, take: Decimal, currency: str
) -> None:
    """The usage line at `index` keeps the units prepaid money paid for; an OVERAGE_USAGE
    line after it prices the rest."""
    line = ledger.lines[index]
    units = line.units or _ZERO
    prepaid = line.subtotal - ledger.unpaid[index] + take
    covered = units_within(pricing.pricingBands, pricing.cumulative, units, prepaid)
    over = units - covered
    if pricing.overagePricingBands is not None:
        overage = price(
            pricing.model_copy(update={"pricingBands": pricing.overagePricingBands}), over
        )
        subtotal = round_money(overage.total, currency)
        bands, unit_price = overage.bands, overage.unit_price
    else:
        subtotal, bands, unit_price = line.subtotal - prepaid, (), line.unitPrice
    ledger.lines[index] = line.model_copy(
        update={
            "units": covered,
            "subtotal": prepaid,
            "usagePerPricingBand": price(pricing, covered).bands,
        }
    )
    ledger.unpaid[index] = _ZERO
    ledger.lines.insert(
        index + 1,
        BillLine.strict(
            id=overage_line_id(line.id),
            lineItemType=LineItemType.OVERAGE_USAGE,
            description=f"{line.description} (overage)",
            aggregationCode=line.aggregationCode,
            compoundAggregationCode=line.compoundAggregationCode,
            units=over,
            unitPrice=unit_price,
            subtotal=subtotal,
            usagePerPricingBand=bands,
            servicePeriodStartDate=line.servicePeriodStartDate,
            servicePeriodEndDate=line.servicePeriodEndDate,
        ),
    )
    ledger.unpaid.insert(index + 1, subtotal)


def _draw_grant(ledger: _Ledger, state: GrantLeft, service: Period) -> BillLine | None:
    """The BALANCE_CONSUMED line of one grant, or None if it paid nothing."""
    grant, left, paid = state.grant, state.left, _ZERO
    for index in ledger.charges(grant.lineItemTypes or [charge.value for charge in ChargeType]):
        take = max(min(left, ledger.unpaid[index], ledger.room - paid), _ZERO)
        ledger.unpaid[index] -= take
        left -= take
        paid += take
    if paid <= 0:
        return None
    return BillLine.strict(
        id=balance_line_id(grant.uid),
        lineItemType=LineItemType.BALANCE_CONSUMED,
        description=grant.description or f"Credit: {grant.reason}",
        balanceId=grant.uid,
        subtotal=-paid,
        creditAmount=grant.amount,
        creditRemaining=left,
        servicePeriodStartDate=service.start,
        servicePeriodEndDate=service.end,
    )


# --- the units some money pays for ----------------------------------------------------


def units_within(bands: Bands, cumulative: bool, units: Decimal, money: Decimal) -> Decimal:
    """The largest number of units, at most `units`, whose price on `bands` is at most
    `money` (tiered: band by band; volume: at the rate of the band `units` reaches)."""
    uppers = [band.lowerLimit for band in bands[1:]] + [None]
    if not cumulative:
        reached = max((b for b in bands if units > b.lowerLimit), key=lambda b: b.lowerLimit)
        if money < reached.fixedPrice:
            return _ZERO
        if reached.unitPrice == 0:
            return units
        return min(units, _quotient(money - reached.fixedPrice, reached.unitPrice))
    spent = _ZERO
    for band, upper in zip(bands, uppers, strict=True):
        if units <= band.lowerLimit:
            break
        entered = spent + band.fixedPrice
        if entered > money:
            return band.lowerLimit
        top = units if upper is None else min(units, upper)
        full = entered + (top - band.lowerLimit) * band.unitPrice
        if full > money:
            return band.lowerLimit + _quotient(money - entered, band.unitPrice)
        spent = full
    return units


def _quotient(numerator: Decimal, denominator: Decimal) -> Decimal:
    """numerator / denominator, exact, or rounded down to 12 decimal places if it does not end."""
    with localcontext() as context:
        context.prec = 60
        context.traps[Inexact] = True
        try:
            quotient = numerator / denominator
        except Inexact:
            context.traps[Inexact] = False
            quotient = (numerator / denominator).quantize(_UNIT_PLACES, rounding=ROUND_DOWN)
    return Decimal(f"{quotient:f}")  # 15000, never 1.5E+4
