"""Segmented aggregations priced on bills, against hand-computed amounts: a pricing per
segment, one for the rest, each segment its own line (and so its own Stripe item)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from streams.alerts.rules import measured
from streams.billing.bills import Extras, build_bill, usage_line_id
from streams.billing.periods import Period
from streams.billing.runs import run_account_plan
from streams.schemas.accounts import AccountPlan
from streams.schemas.bill import Bill
from streams.schemas.catalog import AlertMeasure, AlertRule, Catalog

D = Decimal
APRIL = Period(datetime(2024, 4, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC))
NOW = datetime(2024, 4, 20, tzinfo=UTC)
EU, US, DEFAULT = '{"region":"eu"}', '{"region":"us"}', "{}"

METER = {
    "code": "api",
    "dataFields": [
        {"category": "WHERE", "code": "region"},
        {"category": "MEASURE", "code": "n"},
    ],
}
AGGREGATION = {
    "code": "calls",
    "name": "Calls",
    "meter": "api",
    "targetField": "n",
    "aggregation": "SUM",
    "quantityPerUnit": 1000,
    "rounding": "UP",
    "segmentedFields": ["region"],
    "segments": [{"region": "eu"}, {"region": "us"}],
}
ACCOUNT_PLAN = AccountPlan(
    id="sub_1",
    accountCode="cus_1",
    planCode="p",
    status="ACTIVE",  # type: ignore[arg-type]
    startDate=datetime(2024, 1, 1, tzinfo=UTC),
)


def catalog(pricings: list[dict[str, Any]], currency: str = "USD") -> Catalog:
    return Catalog.from_documents(
        {
            "meters": [METER],
            "aggregations": [AGGREGATION],
            "plans": [{"code": "p", "currency": currency, "pricings": pricings}],
        }
    )


def bill_of(
    pricings: list[dict[str, Any]],
    usage: Mapping[str, Decimal],
    currency: str = "USD",
) -> Bill:
    the_catalog = catalog(pricings, currency)
    bill = build_bill(
        account_plan=ACCOUNT_PLAN,
        plan=the_catalog.plans["p"],
        aggregations=the_catalog.aggregations,
        usage={"calls": sum(usage.values(), D(0))},
        period=APRIL,
        previous=None,
        now=NOW,
        extras=Extras(segments={("calls", key): value for key, value in usage.items()}),
    )
    assert isinstance(bill, Bill)
    assert bill.total == sum((line.subtotal for line in bill.lines), D(0))
    return bill


def bands(*limits_and_prices: tuple[int, str]) -> list[dict[str, Any]]:
    return [{"lowerLimit": lower, "unitPrice": price} for lower, price in limits_and_prices]


EU_PRICE = {"aggregation": "calls", "segment": {"region": "eu"}, "pricingBands": bands((0, "2"))}
REST_PRICE = {"aggregation": "calls", "pricingBands": bands((0, "1"))}
TIERED_US = {
    "aggregation": "calls",
    "segment": {"region": "us"},
    "description": "US calls",
    "pricingBands": bands((0, "1.50"), (10, "0.75")),
}

# (pricings, usage per segment, currency, expected lines as (line id, segment, units,
# subtotal)), each computed by hand. Units are thousands of calls, rounded UP per segment.
CASES = [
    # eu: 2,500 calls -> 3 units x 2 = 6.00; us and the default segment are the rest's,
    # at 1 each: us 1 unit (1 call rounds UP), default 0 units (no usage: a zero line)
    (
        [EU_PRICE, REST_PRICE],
        {EU: D(2500), US: D(1)},
        "USD",
        [
            (f"USAGE:calls:{EU}", {"region": "eu"}, D(3), D("6.00")),
            (f"USAGE:calls:{US}", {"region": "us"}, D(1), D("1.00")),
            (f"USAGE:calls:{DEFAULT}", {}, D(0), D("0.00")),
        ],
    ),
    # tiered us: 14,200 calls -> 15 units: 10 x 1.50 + 5 x 0.75 = 18.75; only the us
    # segment is priced: eu usage and the default segment are not billed
    (
        [TIERED_US],
        {EU: D(5000), US: D(14200)},
        "USD",
        [(f"USAGE:calls:{US}", {"region": "us"}, D(15), D("18.75"))],
    ),
    # one pricing for every segment: each segment is still its own line
    (
        [REST_PRICE],
        {EU: D(999), DEFAULT: D(1001)},
        "USD",
        [
            (f"USAGE:calls:{EU}", {"region": "eu"}, D(1), D("1.00")),
            (f"USAGE:calls:{US}", {"region": "us"}, D(0), D("0.00")),
            (f"USAGE:calls:{DEFAULT}", {}, D(2), D("2.00")),
        ],
    ),
    # JPY has no minor unit: eu 7 units x 12.5 = 87.5 -> 88; default 1 unit x 3.4 -> 3
    (
        [
            {
                "aggregation": "calls",
                "segment": {"region": "eu"},
                "pricingBands": bands((0, "12.5")),
            },
            {"aggregation": "calls", "segment": {}, "pricingBands": bands((0, "3.4"))},
        ],
        {EU: D(6001), DEFAULT: D(1)},
        "JPY",
        [
            (f"USAGE:calls:{EU}", {"region": "eu"}, D(7), D(88)),
            (f"USAGE:calls:{DEFAULT}", {}, D(1), D(3)),
        ],
    ),
]


@pytest.mark.parametrize(("pricings", "usage", "currency", "expected"), CASES)
def test_each_priced_segment_is_its_own_line_priced_by_hand(
    pricings: list[dict[str, Any]],
    usage: Mapping[str, Decimal],
    currency: str,
    expected: list[tuple[str, dict[str, str], Decimal, Decimal]],
) -> None:
    bill = bill_of(pricings, usage, currency)
    found = [(line.id, line.segment, line.units, line.subtotal) for line in bill.lines]
    assert found == expected
    for line in bill.lines:
        assert line.aggregationCode == "calls"
        assert str(line.subtotal) == str(
            line.subtotal.quantize(D(1) if currency == "JPY" else D("0.01"))
        )


def test_a_segment_line_says_its_raw_quantity_and_its_usage_per_pricing_band() -> None:
    bill = bill_of([TIERED_US], {US: D(14200)})
    (line,) = bill.lines
    assert line.quantity == D(14200)
    assert line.description == "US calls (region: us)"
    assert [
        (b.lowerLimit, b.upperLimit, b.units, b.subtotal) for b in line.usagePerPricingBand
    ] == [
        (D(0), D(10), D(10), D("15.00")),
        (D(10), None, D(5), D("3.75")),
    ]


def test_a_segment_line_id_is_stable_and_fits_stripe_metadata() -> None:
    assert usage_line_id("calls", EU) == 'USAGE:calls:{"region":"eu"}'
    long = '{"region":"' + "x" * 300 + '"}'
    assert usage_line_id("calls", long) == usage_line_id("calls", long)
    assert len(usage_line_id("calls", long)) < 60


def test_a_bill_run_reads_usage_per_segment_for_segmented_aggregations_only() -> None:
    the_catalog = catalog([EU_PRICE, REST_PRICE])
    asked: list[Mapping[str, object]] = []

    def segments(account: str, functions: Mapping[str, object], start: int, end: int) -> Any:
        asked.append(functions)
        return {("calls", EU): D(1000), ("calls", DEFAULT): D(3000)}

    result = run_account_plan(
        account_plan=ACCOUNT_PLAN,
        account=None,
        catalog=the_catalog,
        previous={},
        usage=lambda account, functions, start, end: {"calls": D(4000)},
        now=NOW,
        segments=segments,
    )
    (bill, *_) = result.bills
    assert [(line.segment, line.subtotal) for line in bill.lines] == [
        ({"region": "eu"}, D("2.00")),
        ({"region": "us"}, D("0.00")),
        ({}, D("3.00")),
    ]
    assert asked and all(set(functions) == {"calls"} for functions in asked)


def test_an_alert_on_a_segmented_aggregation_measures_all_its_segments_not_one_line() -> None:
    bill = bill_of([EU_PRICE, REST_PRICE], {EU: D(2500), US: D(1)})
    rule = AlertRule(
        code="r", measure=AlertMeasure.AGGREGATION, aggregation="calls", threshold=D(1)
    )
    totals = {"calls": D(2501)}
    assert measured(rule, bill, catalog([]), lambda *_: totals) == D(2501)
