"""What a bill run does for one account: which periods, which usage, which finalization.

Pure functions; the billing agent reads the tables, calls these and writes the result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

import orjson

from streams.billing.bills import BillLocked, Extras, bill_id, build_bill, transition
from streams.billing.compound import needed_aggregations
from streams.billing.counters import CountChange
from streams.billing.credits import commitments_of, credits_for
from streams.billing.periods import Period, billing_period, covered
from streams.clock import epoch_ms, from_ms
from streams.schemas.accounts import Account, AccountPlan, AccountPlanStatus
from streams.schemas.balances import BalanceGrant
from streams.schemas.bill import Bill, BillStatus, bill_json
from streams.schemas.catalog import (
    Aggregation,
    AggregationFunction,
    Catalog,
    Counter,
    PerCatalog,
    Plan,
)

# The instant before a moment: the last of a period that ends (exclusively) there.
MICROSECOND = timedelta(microseconds=1)
UsageReader = Callable[[str, Mapping[str, object], int, int], Mapping[str, Decimal | None]]
CountReader = Callable[[str, str], Sequence[CountChange]]  # (account, counter) → history
GrantReader = Callable[[str], Sequence[BalanceGrant]]  # account → its credit grants


def no_grants(account: str) -> Sequence[BalanceGrant]:
    return ()


# (account, functions, start, end) → the value per (aggregation, segment id) with usage
SegmentReader = Callable[
    [str, Mapping[str, object], int, int], Mapping[tuple[str, str], Decimal | None]
]


def no_segments(
    account: str, functions: Mapping[str, object], start: int, end: int
) -> Mapping[tuple[str, str], Decimal | None]:
    return {}


def no_counts(account: str, counter: str) -> Sequence[CountChange]:
    return ()


def billable(account_plan: AccountPlan) -> bool:
    return account_plan.planCode is not None and account_plan.status != AccountPlanStatus.UNMAPPED


def periods_to_bill(account_plan: AccountPlan, catalog: Catalog, now: datetime) -> list[Period]:
    """The period containing `now` (or the plan's last one) and the one before it.

    The previous period is included so a run just after a period ended brings its bill
    up to date (late usage) until the bill is locked.
    """
    plan = catalog.plans.get(account_plan.planCode or "")
    if plan is None or not billable(account_plan) or now < account_plan.startDate:
        return []
    last = now
    if account_plan.endDate is not None and account_plan.endDate <= now:
        last = account_plan.endDate - MICROSECOND
    if last < account_plan.startDate:
        return []
    current = _clamped(billing_period(account_plan, plan, last), account_plan)
    periods = [current]
    if current.start > account_plan.startDate:
        before = billing_period(account_plan, plan, current.start - MICROSECOND)
        periods.insert(0, _clamped(Period(before.start, current.start), account_plan))
    return periods


def _clamped(period: Period, account_plan: AccountPlan) -> Period:
    """A period never starts before its account plan.

    Stripe's first period of a subscription can be partial (a billing cycle anchor in
    the future): after the renewal, the period before the current one is computed
    from the anchor's grid and would start a whole cycle earlier, giving the same
    usage a second bill id. Clamped, it is the same period, so the same bill.
    """
    if period.start >= account_plan.startDate:
        return period
    return Period(account_plan.startDate, period.end)


@dataclass(frozen=True)
class RunResult:
    bills: list[Bill]
    skipped: list[str]


def run_account_plan(
    *,
    account_plan: AccountPlan,
    account: Account | None,
    catalog: Catalog,
    previous: Mapping[str, Bill],
    usage: UsageReader,
    now: datetime,
    counts: CountReader = no_counts,
    grants: GrantReader = no_grants,
    ledger: MutableMapping[str, Bill] | None = None,
    segments: SegmentReader = no_segments,
) -> RunResult:
    """New bill versions for every period of the account plan that needs one.

    With credits (a commitment or grants of the account), the later bills of the account
    plan that are stored and not locked are recalculated too, in order, so what an
    earlier bill consumes re-flows into them. `ledger` holds the latest version of each
    of the account's bills, fresh ones included: what credits are left is read from it,
    and each bill made here is put in it (a run of several account plans shares it).
    """
    bills: list[Bill] = []
    skipped: list[str] = []
    plan = catalog.plans.get(account_plan.planCode or "")
    if plan is None:
        return RunResult(
            [], [f"account plan {account_plan.id}: plan {account_plan.planCode!r} not in catalog"]
        )
    aggregations, functions, segmented, counters = _priced_by(catalog, plan)
    extras = Extras(
        compounds=catalog.compoundAggregations,
        counters=counters,
        counts={code: counts(account_plan.accountCode, code) for code in counters},
    )
    ledger = dict(previous) if ledger is None else ledger
    account_grants = grants(account_plan.accountCode)
    periods = periods_to_bill(account_plan, catalog, now)
    if periods and (account_grants or _committed(catalog, account_plan)):
        periods += _later_stored(previous.values(), account_plan.id, periods[-1].start)
    for period in periods:
        window = covered(period, account_plan.startDate, account_plan.endDate)
        if window is None:
            continue
        values = usage(
            account_plan.accountCode, functions, epoch_ms(window.start), epoch_ms(window.end)
        )
        if segmented:
            start_ms, end_ms = epoch_ms(window.start), epoch_ms(window.end)
            by_segment = segments(account_plan.accountCode, segmented, start_ms, end_ms)
            period_extras = dataclasses.replace(extras, segments=by_segment)
        else:
            period_extras = extras
        this_id = bill_id(account_plan.id, period.start)
        existing = previous.get(this_id)
        credits = credits_for(
            catalog=catalog,
            plan=plan,
            account=account_plan.accountCode,
            account_plan_id=account_plan.id,
            period=period,
            bill_id=this_id,
            bills=ledger.values(),
            grants=account_grants,
        )
        try:
            bill = build_bill(
                account_plan=account_plan,
                plan=plan,
                aggregations=aggregations,
                usage=values,
                period=period,
                previous=existing,
                now=now,
                account=account,
                extras=period_extras,
                credits=credits,
            )
        except BillLocked:
            skipped.append(f"{existing.id if existing else '?'} is locked")
            continue
        if bill is not None:
            bills.append(bill)
            ledger[bill.id] = bill
    return RunResult(bills, skipped)


class _Priced(NamedTuple):
    """What a plan prices, read from the catalog once per catalog, not once per account."""

    aggregations: dict[str, Aggregation]  # every simple aggregation the plan needs, by code
    functions: dict[str, AggregationFunction]  # their functions: what the usage read asks
    segmented: dict[str, AggregationFunction]  # those of them read per segment too
    counters: dict[str, Counter]  # the counters the plan prices


# a plan's priced aggregations, by plan code, for the catalog they came from
_PRICED: PerCatalog[dict[str, _Priced]] = PerCatalog(lambda catalog: {})


def _priced_by(catalog: Catalog, plan: Plan) -> _Priced:
    by_plan = _PRICED(catalog)
    cached = by_plan.get(plan.code)
    if cached is not None:
        return cached
    needed = needed_aggregations((p.priced for p in plan.pricings), catalog)
    aggregations = {code: catalog.aggregations[code] for code in sorted(needed)}
    functions = {code: aggregation.aggregation for code, aggregation in aggregations.items()}
    priced = by_plan[plan.code] = _Priced(
        aggregations,
        functions,
        {code: functions[code] for code in functions if aggregations[code].segmented},
        {
            p.counter: catalog.counters[p.counter]
            for p in plan.counterPricings
            if p.counter in catalog.counters
        },
    )
    return priced


def _committed(catalog: Catalog, account_plan: AccountPlan) -> bool:
    return bool(commitments_of(catalog, account_plan.accountCode, account_plan.planCode or ""))


def _later_stored(bills: Iterable[Bill], account_plan_id: str, after: datetime) -> list[Period]:
    """The periods of the account plan's stored bills after `after` that may change."""
    return sorted(
        Period(bill.startDate, bill.endDate)
        for bill in bills
        if bill.accountPlanId == account_plan_id
        and bill.startDate > after
        and bill.status is not BillStatus.LOCKED
    )


def finalize(bill: Bill, now: datetime, grace: timedelta, approve: bool, lock: bool) -> list[Bill]:
    """Status changes due to a bill whose period ended more than `grace` ago."""
    if bill.endDate + grace > now:
        return []
    out: list[Bill] = []
    current = bill
    if approve and current.status == BillStatus.PENDING:
        current = transition(current, BillStatus.APPROVED, now)
        out.append(current)
    if lock and current.status == BillStatus.APPROVED:
        current = transition(current, BillStatus.LOCKED, now)
        out.append(current)
    return out


# --- the per-account bill index (lock checks, listings) --------------------------------


def index_entry(bill: Bill) -> dict[str, object]:
    return {
        "id": bill.id,
        "accountPlanId": bill.accountPlanId,
        "start": epoch_ms(bill.startDate),
        "end": epoch_ms(bill.endDate),
        "status": bill.status.value,
        "version": bill.version,
    }


def updated_index(stored: bytes | None, bills: Sequence[Bill | EncodedBill]) -> bytes:
    entries = {entry["id"]: entry for entry in (orjson.loads(stored) if stored else [])}
    for bill in bills:
        entries[bill.id] = bill.entry if isinstance(bill, EncodedBill) else index_entry(bill)
    return orjson.dumps(sorted(entries.values(), key=lambda e: (e["start"], e["id"])))


@dataclass(frozen=True, slots=True)
class EncodedBill:
    """A new bill version as it is written: its JSON, made once for `bills` and the bills
    table, and the few fields the bill index and the log need. A run of many accounts
    keeps these instead of every Bill model until it is published."""

    account: str
    id: str
    version: int
    status: BillStatus
    total: Decimal
    currency: str
    entry: dict[str, object]
    json: bytes


def encoded(bill: Bill) -> EncodedBill:
    return EncodedBill(
        bill.accountCode,
        bill.id,
        bill.version,
        bill.status,
        bill.total,
        bill.currency,
        index_entry(bill),
        bill_json(bill),
    )


class LockedRange(NamedTuple):
    start: int
    end: int
    bill_id: str


def locked_ranges(stored: bytes) -> list[LockedRange]:
    """The periods (epoch ms) of an account's LOCKED bills, from its bill index."""
    return [
        LockedRange(entry["start"], entry["end"], entry["id"])
        for entry in orjson.loads(stored)
        if entry["status"] == BillStatus.LOCKED
    ]


def locked_reason(ranges: list[LockedRange], ts_ms: int) -> str | None:
    for locked in ranges:
        if locked.start <= ts_ms < locked.end:
            return (
                f"the billing period {from_ms(locked.start).isoformat()} to "
                f"{from_ms(locked.end).isoformat()} is locked (bill {locked.bill_id})"
            )
    return None
