"""Which alert rules an account's bills have crossed: pure functions the alerts agent calls.

A rule measures, for each account plan's bill of the current billing period, an
aggregation's value over the period (the bill's usage line quantity, or the usage of the
period when the plan does not price that aggregation), the bill's total, or the percent
of the account's commitment (or credit grants) used up with this bill (its
COMMITMENT_CONSUMED / BALANCE_CONSUMED lines), and is crossed when that value reaches
its threshold. One alert per rule, account plan and period: its
id and its state key derive from those three (`alert_id`, `fired_key`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

from streams.clock import epoch_ms
from streams.schemas.alerts import Alert
from streams.schemas.bill import Bill, LineItemType
from streams.schemas.catalog import (
    PERCENT_MEASURES,
    AggregationFunction,
    AlertMeasure,
    AlertRule,
    Catalog,
)
from streams.tables import table_key

_CREDIT_LINE = {
    AlertMeasure.COMMITMENT_CONSUMED_PERCENT: LineItemType.COMMITMENT_CONSUMED,
    AlertMeasure.BALANCE_CONSUMED_PERCENT: LineItemType.BALANCE_CONSUMED,
}
_PERCENT_PLACES = Decimal("0.0001")
UsageReader = Callable[
    [str, Mapping[str, AggregationFunction], int, int], Mapping[str, Decimal | None]
]


def alert_id(rule: str, account_plan_id: str, period_start: datetime) -> str:
    key = f"{rule}|{account_plan_id}|{epoch_ms(period_start)}"
    return "alert_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def fired_key(alert: Alert) -> bytes:
    """The alert's key in the account's table of fired alerts."""
    start = epoch_ms(alert.periodStartDate)
    return table_key(alert.accountCode, alert.ruleCode, alert.accountPlanId, start).encode()


def crossed(
    rules: Iterable[AlertRule],
    bills: Iterable[Bill],
    catalog: Catalog,
    usage: UsageReader,
    now: datetime,
) -> list[Alert]:
    """An alert for every rule whose measure of a bill reached the rule's threshold."""
    out: list[Alert] = []
    for bill in bills:
        for rule in rules:
            if rule.plans and bill.planCode not in rule.plans:
                continue
            value = measured(rule, bill, catalog, usage)
            if value is None or value < rule.threshold:
                continue
            out.append(
                Alert(
                    id=alert_id(rule.code, bill.accountPlanId, bill.startDate),
                    ruleCode=rule.code,
                    accountCode=bill.accountCode,
                    accountPlanId=bill.accountPlanId,
                    billId=bill.id,
                    periodStartDate=bill.startDate,
                    periodEndDate=bill.endDate,
                    measure=rule.measure,
                    aggregationCode=rule.aggregation,
                    threshold=rule.threshold,
                    value=value,
                    currency=bill.currency if rule.measure is AlertMeasure.BILL_TOTAL else None,
                    crossedAt=now,
                )
            )
    return out


def measured(rule: AlertRule, bill: Bill, catalog: Catalog, usage: UsageReader) -> Decimal | None:
    """The rule's value for this bill's period; None when there is nothing to measure."""
    if rule.measure is AlertMeasure.BILL_TOTAL:
        return bill.total
    if rule.measure in PERCENT_MEASURES:
        return consumed_percent(bill, _CREDIT_LINE[rule.measure])
    code = rule.aggregation or ""
    for line in bill.lines:
        if line.aggregationCode == code and line.segment is None:  # a segment: not the total
            return line.quantity
    aggregation = catalog.aggregations.get(code)
    if aggregation is None:
        return None
    values: Mapping[str, Decimal | None] = usage(
        bill.accountCode,
        {code: aggregation.aggregation},
        epoch_ms(bill.startDate),
        epoch_ms(bill.endDate),
    )
    return values.get(code)


def consumed_percent(bill: Bill, line_type: LineItemType) -> Decimal | None:
    """How much of the commitment (or of the grants) the bill's credit lines of
    `line_type` say is used up, including this bill, in percent of the amount (rounded
    down to 4 places, so it never reads as reached before it is); None without such a line."""
    credited = [line for line in bill.lines if line.lineItemType == line_type]
    amount = sum((line.creditAmount or Decimal(0) for line in credited), Decimal(0))
    if not credited or amount <= 0:
        return None
    left = sum((line.creditRemaining or Decimal(0) for line in credited), Decimal(0))
    return ((amount - left) * 100 / amount).quantize(_PERCENT_PLACES, rounding=ROUND_DOWN)
