"""Compound aggregations priced on bills, against hand-computed amounts."""

from __future__ import annotations

import gc
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from connectors.catalog_io import merged_catalog
from streams.billing.bills import Extras, build_bill
from streams.billing.compound import needed_aggregations
from streams.billing.periods import Period
from streams.schemas.accounts import AccountPlan
from streams.schemas.bill import Bill, BillLine
from streams.schemas.catalog import Catalog, CatalogError

D = Decimal
APRIL = Period(datetime(2024, 4, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC))
NOW = datetime(2024, 4, 20, tzinfo=UTC)

METER = {
    "code": "api",
    "dataFields": [
        {"category": "MEASURE", "code": "n"},
        {"category": "MEASURE", "code": "bytes"},
        {"category": "MEASURE", "code": "failed"},
    ],
}
AGGREGATIONS = [
    # Their own quantityPerUnit and rounding must not reach a compound aggregation.
    {"code": "calls", "meter": "api", "targetField": "n", "aggregation": "SUM",
     "quantityPerUnit": 1000, "rounding": "UP"},
    {"code": "gb", "meter": "api", "targetField": "bytes", "aggregation": "SUM",
     "rounding": "UP", "defaultValue": 0},
    {"code": "errors", "meter": "api", "targetField": "failed", "aggregation": "SUM"},
]  # fmt: skip
COMPOUNDS = [
    {"code": "api_units", "name": "API units", "calculation": "calls / 1000 + gb * 10",
     "rounding": "UP"},
    {"code": "api_units_null_ok", "calculation": "calls / 1000 + gb * 10", "rounding": "UP",
     "evaluateNullAggregations": True},
    {"code": "per_thousand", "calculation": "calls", "quantityPerUnit": 1000, "rounding": "UP"},
    {"code": "error_ratio", "calculation": "errors / calls"},
    {"code": "safe_error_ratio", "calculation": "if(calls == 0, 0, errors / calls)"},
    {"code": "doubled_units", "calculation": "api_units * 2"},
]  # fmt: skip


def catalog(pricings: list[dict[str, Any]], currency: str = "USD") -> Catalog:
    return Catalog.from_documents(
        {
            "meters": [METER],
            "aggregations": AGGREGATIONS,
            "compoundAggregations": COMPOUNDS,
            "plans": [{"code": "p", "currency": currency, "pricings": pricings}],
        }
    )


def flat(compound: str, unit_price: str) -> dict[str, Any]:
    return {
        "compoundAggregation": compound,
        "pricingBands": [{"lowerLimit": 0, "unitPrice": unit_price}],
    }


def line_of(
    pricing: dict[str, Any], usage: Mapping[str, Decimal | None], currency: str = "USD"
) -> BillLine:
    bill = bill_of(catalog([pricing], currency), usage)
    (line,) = bill.lines
    assert bill.total == line.subtotal
    return line


def bill_of(the_catalog: Catalog, usage: Mapping[str, Decimal | None]) -> Bill:
    bill = build_bill(
        account_plan=AccountPlan(
            id="sub_1",
            accountCode="cus_1",
            planCode="p",
            status="ACTIVE",  # type: ignore[arg-type]
            startDate=datetime(2024, 1, 1, tzinfo=UTC),
        ),
        plan=the_catalog.plans["p"],
        aggregations=the_catalog.aggregations,
        usage=usage,
        period=APRIL,
        previous=None,
        now=NOW,
        extras=Extras(compounds=the_catalog.compoundAggregations),
    )
    assert isinstance(bill, Bill)
    return bill


# (compound, unit price, usage, expected quantity, units, subtotal), each computed by hand.
CASES = [
    # 2,500 / 1000 + 0.25 x 10 = 5.0 (raw values; rounded first it would be 3 + 10 = 13)
    ("api_units", "0.50", {"calls": D(2500), "gb": D("0.25")}, D("5.0"), D(5), D("2.50")),
    # 1.2345 + 0.5 = 1.7345, rounded UP to 2 units
    ("api_units", "0.50", {"calls": D(1234.5), "gb": D("0.05")}, D("1.7345"), D(2), D("1.00")),
    # gb has no usage: the compound value is null, nothing is charged
    ("api_units", "0.50", {"calls": D(2500)}, None, D(0), D("0.00")),
    # ... unless evaluateNullAggregations passes gb's defaultValue (0): 2.5, UP to 3
    ("api_units_null_ok", "0.50", {"calls": D(2500)}, D("2.5"), D(3), D("1.50")),
    # the compound's own quantityPerUnit and rounding apply: 2,500 / 1000 = 2.5, UP to 3
    ("per_thousand", "1.00", {"calls": D(2500)}, D(2500), D(3), D("3.00")),
    # 30 / 1,200 = 0.025 units at 100.00
    ("error_ratio", "100.00", {"calls": D(1200), "errors": D(30)}, D("0.025"), D("0.025"),
     D("2.50")),
    # a division by zero has no value (like missing usage) instead of failing the bill
    ("error_ratio", "100.00", {"calls": D(0), "errors": D(30)}, None, D(0), D("0.00")),
    ("safe_error_ratio", "100.00", {"calls": D(0), "errors": D(30)}, D(0), D(0), D("0.00")),
    # a compound of a compound reads its raw value: 5.0 x 2 = 10 (not 5 rounded, twice)
    ("doubled_units", "0.25", {"calls": D(2500), "gb": D("0.25")}, D("10.0"), D("10.0"),
     D("2.50")),
]  # fmt: skip


@pytest.mark.parametrize(("code", "unit_price", "usage", "value", "units", "subtotal"), CASES)
def test_a_compound_aggregation_prices_its_calculation_over_raw_aggregation_values(
    code: str,
    unit_price: str,
    usage: dict[str, Decimal],
    value: Decimal | None,
    units: Decimal,
    subtotal: Decimal,
) -> None:
    line = line_of(flat(code, unit_price), usage)
    assert (line.quantity, line.units, line.subtotal) == (value, units, subtotal)
    assert (line.id, line.compoundAggregationCode, line.aggregationCode) == (
        f"USAGE:{code}",
        code,
        None,
    )


def test_a_tiered_compound_line_shows_its_usage_per_pricing_band() -> None:
    pricing = {
        "compoundAggregation": "api_units",
        "description": "API units",
        "pricingBands": [
            {"lowerLimit": 0, "unitPrice": "1.00"},
            {"lowerLimit": 10, "unitPrice": "0.50"},
        ],
    }
    # 12,000 / 1000 + 0.5 x 10 = 17 units: 10 x 1.00 + 7 x 0.50 = 13.50
    line = line_of(pricing, {"calls": D(12_000), "gb": D("0.5")})
    assert line.subtotal == D("13.50")
    assert [(b.units, b.subtotal) for b in line.usagePerPricingBand] == [
        (D(10), D("10.00")),
        (D("7.0"), D("3.500")),
    ]


def test_a_compound_aggregation_on_a_jpy_plan_is_rounded_to_whole_yen() -> None:
    # 1,734.5 / 1,000 = 1.7345 units x 213.7 JPY = 370.66265 -> 371 JPY (whole yen)
    pricing = {
        "compoundAggregation": "error_ratio",
        "pricingBands": [{"lowerLimit": 0, "unitPrice": "213.7"}],
    }
    line = line_of(pricing, {"calls": D(1000), "errors": D("1734.5")}, currency="JPY")
    assert (line.quantity, line.subtotal) == (D("1.7345"), D(371))


def test_the_usage_view_is_asked_for_every_aggregation_a_priced_compound_reads() -> None:
    the_catalog = catalog([flat("doubled_units", "1")])
    assert needed_aggregations(["doubled_units"], the_catalog) == {"calls", "gb"}
    assert needed_aggregations(["errors", "per_thousand"], the_catalog) == {"errors", "calls"}


def catalog_errors(compounds: list[dict[str, Any]], **plan: Any) -> str:
    document: dict[str, Any] = {
        "meters": [METER],
        "aggregations": AGGREGATIONS,
        "compoundAggregations": compounds,
    }
    if plan:
        document["plans"] = [{"code": "p", "currency": "USD", **plan}]
    with pytest.raises(CatalogError) as caught:
        Catalog.from_documents(document)
    return "\n".join(caught.value.errors)


def test_catalog_refuses_a_compound_aggregation_that_depends_on_itself_with_its_path() -> None:
    errors = catalog_errors(
        [
            {"code": "a", "calculation": "b + calls"},
            {"code": "b", "calculation": "a * 2"},
            {"code": "c", "calculation": "c + 1"},
        ]
    )
    assert "compoundAggregations[a].calculation: depends on itself (a -> b -> a)" in errors
    assert "compoundAggregations[c].calculation: depends on itself (c -> c)" in errors


def test_catalog_refuses_unknown_references_with_their_path() -> None:
    errors = catalog_errors(
        [{"code": "a", "calculation": "calls + ghost"}],
        pricings=[
            {"compoundAggregation": "nowhere", "pricingBands": [{"lowerLimit": 0}]},
            {"compoundAggregation": "a", "pricingBands": [{"lowerLimit": 0}]},
        ],
    )
    assert "compoundAggregations[a].calculation: unknown aggregation 'ghost' at 9" in errors
    assert (
        "plans[p].pricings[0].compoundAggregation: unknown compound aggregation 'nowhere'" in errors
    )


def test_catalog_refuses_a_compound_code_that_is_an_aggregation_code() -> None:
    errors = catalog_errors([{"code": "calls", "calculation": "gb"}])
    assert "compoundAggregations[calls].code: 'calls' is already the code of an aggregation" in (
        errors
    )


def test_a_pricing_names_exactly_one_aggregation_or_compound_aggregation() -> None:
    both = {"aggregation": "calls", "compoundAggregation": "a", "pricingBands": [{"lowerLimit": 0}]}
    errors = catalog_errors([{"code": "a", "calculation": "calls"}], pricings=[both])
    assert "plans[0].pricings[0]: Value error, set exactly one of aggregation, " in errors


def test_a_calculation_that_does_not_parse_is_refused_with_the_column() -> None:
    errors = catalog_errors([{"code": "a", "calculation": "calls +"}])
    assert errors.startswith("compoundAggregations[a].calculation: ")
    assert "at 8" in errors


def test_catalog_apply_validates_the_file_whole_and_refuses_its_cycle_with_the_path() -> None:
    document = {
        "meters": [METER],
        "aggregations": AGGREGATIONS,
        "compoundAggregations": [
            {"code": "a", "calculation": "b + calls"},
            {"code": "b", "calculation": "a * 2"},
        ],
    }
    with pytest.raises(CatalogError) as caught:
        merged_catalog({}, document)  # what `meterline catalog apply` checks
    assert caught.value.errors == [
        "compoundAggregations[a].calculation: depends on itself (a -> b -> a)"
    ]


def test_pricing_compound_aggregations_leaves_no_garbage_for_the_cycle_collector() -> None:
    # A bill run prices thousands of accounts with the cycle collector paused
    # (`streams.billing.state`): garbage in reference cycles piles up until it runs again.
    the_catalog = catalog([flat("doubled_units", "0.25"), flat("api_units", "0.50")])
    usage = {"calls": D(2500), "gb": D("0.25")}
    bill_of(the_catalog, usage)  # compiled expressions are cached
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            bill_of(the_catalog, usage)
        left = gc.collect()
    finally:
        gc.enable()
    assert left == 0
