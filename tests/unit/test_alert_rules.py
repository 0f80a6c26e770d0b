"""Alert rules: which rules an account's bill of the period crossed, the alert's id, and
rules the catalog refuses (naming the field and the rule)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from streams.alerts.pending import Pending, accounts_of
from streams.alerts.rules import alert_id, crossed, fired_key
from streams.billing.runs import run_account_plan
from streams.schemas.bill import Bill
from streams.schemas.catalog import AlertRule, Catalog, CatalogError
from streams.usage.metering import Message
from tests.unit.test_bill_runs import CATALOG, START, account_plan

NOW = START + timedelta(days=3)


def usage_of(values: Mapping[str, str]) -> Any:
    def read(account: str, functions: Mapping[str, Any], start: int, end: int) -> dict[str, Any]:
        return {code: Decimal(values[code]) if code in values else None for code in functions}

    return read


def starter_bill(**values: str) -> Bill:
    """The starter plan's bill of the period containing NOW, with this usage."""
    result = run_account_plan(
        account_plan=account_plan(currentPeriodStart=None, currentPeriodEnd=None),
        account=None,
        catalog=CATALOG,
        previous={},
        usage=usage_of(values),
        now=NOW,
    )
    return result.bills[-1]


def rule(**fields: Any) -> AlertRule:
    return AlertRule.model_validate({"code": "r1", **fields})


CALLS_10K = rule(measure="AGGREGATION", aggregation="api_calls", threshold="10000")
SPEND_40 = rule(code="spend", measure="BILL_TOTAL", threshold="40.00")


@pytest.mark.parametrize(
    ("calls", "fired"),
    [("9999", []), ("10000", ["r1"]), ("10001", ["r1"])],
)
def test_an_aggregation_rule_fires_when_the_periods_value_reaches_the_threshold(
    calls: str, fired: list[str]
) -> None:
    bill = starter_bill(api_calls=calls)
    alerts = crossed([CALLS_10K], [bill], CATALOG, usage_of({}), NOW)
    assert [alert.ruleCode for alert in alerts] == fired
    for alert in alerts:
        assert (alert.value, alert.threshold, alert.aggregationCode) == (
            Decimal(calls),
            Decimal(10000),
            "api_calls",
        )
        assert (alert.periodStartDate, alert.periodEndDate) == (bill.startDate, bill.endDate)
        assert (alert.billId, alert.accountCode, alert.currency) == (bill.id, "cus_1", None)


def test_a_bill_total_rule_fires_on_the_total_in_the_plans_currency() -> None:
    # starter: 10.00 standing charge; 12,000 calls tiered = 22.00; minimum spend 25.00
    # -> 10.00 + 22.00 + 3.00 (active users and data transfer default to 0) = 35.00
    cheap = starter_bill(api_calls="12000")
    dear = starter_bill(api_calls="20000")  # 10.00 + 30.00 = 40.00
    assert crossed([SPEND_40], [cheap], CATALOG, usage_of({}), NOW) == []
    [alert] = crossed([SPEND_40], [dear], CATALOG, usage_of({}), NOW)
    assert (alert.value, alert.currency, alert.measure) == (Decimal("40.00"), "USD", "BILL_TOTAL")


def test_a_rule_for_other_plans_does_not_fire() -> None:
    pro_only = rule(measure="AGGREGATION", aggregation="api_calls", threshold="1", plans=["pro"])
    assert crossed([pro_only], [starter_bill(api_calls="5")], CATALOG, usage_of({}), NOW) == []


def test_an_aggregation_the_plan_does_not_price_is_measured_over_the_period() -> None:
    storage = rule(measure="AGGREGATION", aggregation="peak_storage", threshold="50")
    bill = starter_bill(api_calls="5")
    [alert] = crossed([storage], [bill], CATALOG, usage_of({"peak_storage": "64"}), NOW)
    assert alert.value == Decimal(64)


def test_an_alert_is_one_per_rule_account_plan_and_period() -> None:
    bill = starter_bill(api_calls="10000")
    later = bill.startDate + timedelta(days=31)
    assert alert_id("r1", "sub_1", bill.startDate) == alert_id("r1", "sub_1", bill.startDate)
    assert (
        len(
            {
                alert_id("r1", "sub_1", bill.startDate),
                alert_id("r2", "sub_1", bill.startDate),
                alert_id("r1", "sub_2", bill.startDate),
                alert_id("r1", "sub_1", later),
            }
        )
        == 4
    )
    [first] = crossed([CALLS_10K], [bill], CATALOG, usage_of({}), NOW)
    [again] = crossed([CALLS_10K], [starter_bill(api_calls="20000")], CATALOG, usage_of({}), NOW)
    assert (first.id, fired_key(first)) == (again.id, fired_key(again))


@pytest.mark.parametrize(
    ("item", "error"),
    [
        (
            {"measure": "AGGREGATION", "threshold": "1"},
            "alertRules[0].aggregation: Value error, required when measure is AGGREGATION",
        ),
        (
            {"measure": "BILL_TOTAL", "aggregation": "api_calls", "threshold": "1"},
            "alertRules[0].aggregation: Value error, only for measure AGGREGATION, not BILL_TOTAL",
        ),
        (
            {"measure": "BILL_TOTAL", "threshold": "0"},
            "alertRules[0].threshold: Input should be greater than 0",
        ),
        (
            {"measure": "BILL_TOTAL", "threshold": "x"},
            "alertRules[0].threshold: Input should be a valid decimal",
        ),
        (
            {"measure": "PERCENT", "threshold": "1"},
            "alertRules[0].measure: Input should be 'AGGREGATION', 'BILL_TOTAL', "
            "'COMMITMENT_CONSUMED_PERCENT' or 'BALANCE_CONSUMED_PERCENT'",
        ),
        (
            {"measure": "AGGREGATION", "aggregation": "nope", "threshold": "1"},
            "alertRules[r1].aggregation: unknown aggregation 'nope'",
        ),
        (
            {"measure": "BILL_TOTAL", "threshold": "1", "plans": ["gold"]},
            "alertRules[r1].plans: unknown plan 'gold'",
        ),
    ],
)
def test_a_bad_alert_rule_is_refused_naming_the_field_and_the_rule(
    item: dict[str, Any], error: str
) -> None:
    document = CATALOG.model_dump(mode="json")
    sections = {name: list(items.values()) for name, items in document.items()}
    sections["alertRules"] = [{"code": "r1", **item}]
    with pytest.raises(CatalogError) as refused:
        Catalog.from_documents(sections)
    assert error in refused.value.errors


def test_the_accounts_of_a_batch_are_noted_only_while_rules_exist() -> None:
    single = Message(b"a", b'{"account": "acme", "uid": "1"}', None)  # type: ignore[arg-type]
    envelope = Message(
        b"b",
        b'{"measurements": [{"account": "b1"}, {"account": "b2"}, {"uid": "x"}]}',
        None,  # type: ignore[arg-type]
    )
    broken = Message(b"c", b"{not json", None)  # type: ignore[arg-type]
    assert accounts_of([single, envelope, broken]) == ["acme", "b1", "b2"]
    pending = Pending()
    pending.seen([single])
    assert len(pending) == 0
    pending.watching = True
    pending.seen([single, envelope])
    pending.seen([single])
    assert pending.take(2) == ["acme", "b1"]
    assert pending.take(10) == ["b2"]


def test_a_naive_datetime_never_reaches_an_alert() -> None:
    assert NOW.tzinfo is UTC
    bill = starter_bill(api_calls="10000")
    with pytest.raises(ValueError):
        crossed([CALLS_10K], [bill], CATALOG, usage_of({}), datetime(2026, 1, 1))
