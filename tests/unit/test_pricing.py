import bisect
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.billing.pricing import price, quantity
from streams.schemas.catalog import Aggregation, Pricing, PricingBand

D = Decimal


def aggregation(**overrides: Any) -> Aggregation:
    fields: dict[str, Any] = {
        "code": "api_calls",
        "meter": "api",
        "targetField": "calls",
        "aggregation": "SUM",
    }
    return Aggregation.model_validate({**fields, **overrides})


def pricing(cumulative: bool, *bands: tuple[str, str, str]) -> Pricing:
    return Pricing(
        aggregation="api_calls",
        cumulative=cumulative,
        pricingBands=tuple(
            PricingBand(lowerLimit=D(lower), unitPrice=D(unit), fixedPrice=D(fixed))
            for lower, unit, fixed in bands
        ),
    )


TIERED = pricing(True, ("0", "0.10", "5"), ("100", "0.05", "10"), ("1000", "0.01", "0"))
VOLUME = pricing(False, ("0", "1.00", "0"), ("100", "0.80", "20"), ("1000", "0.50", "50"))


@pytest.mark.parametrize(
    ("raw", "overrides", "units"),
    [
        (None, {"defaultValue": "5"}, "5"),
        (None, {}, "0"),
        ("10", {"quantityPerUnit": "3", "rounding": "UP"}, "4"),
        ("10", {"quantityPerUnit": "3", "rounding": "DOWN"}, "3"),
        ("10", {"quantityPerUnit": "3", "rounding": "NEAREST"}, "3"),
        ("1025", {"quantityPerUnit": "1024", "rounding": "UP"}, "2"),
        ("1024", {"quantityPerUnit": "1024", "rounding": "UP"}, "1"),
        ("2047", {"quantityPerUnit": "1024", "rounding": "DOWN"}, "1"),
        ("0.1", {"rounding": "UP"}, "1"),
        ("0", {"rounding": "UP"}, "0"),
        ("2.5", {"rounding": "NEAREST"}, "3"),
        ("3.5", {"rounding": "NEAREST"}, "4"),
        ("2.4999", {"rounding": "NEAREST"}, "2"),
        ("2.9", {"rounding": "DOWN"}, "2"),
        ("-1.5", {"rounding": "DOWN"}, "-2"),
        ("-1.5", {"rounding": "UP"}, "-1"),
        ("2.75", {"rounding": "NONE"}, "2.75"),
        ("7", {"quantityPerUnit": "2", "rounding": "NONE"}, "3.5"),
        (None, {"defaultValue": "2500", "quantityPerUnit": "1000", "rounding": "UP"}, "3"),
    ],
)
def test_quantity_applies_default_value_quantity_per_unit_then_rounding(
    raw: str | None, overrides: dict[str, Any], units: str
) -> None:
    assert quantity(None if raw is None else D(raw), aggregation(**overrides)) == D(units)


def test_quantity_without_rounding_keeps_a_repeating_fraction_to_full_precision() -> None:
    assert quantity(D(10), aggregation(quantityPerUnit="3")) == D(10) / D(3)


@pytest.mark.parametrize(
    ("units", "total"),
    [
        ("0", "0"),
        ("1", "5.10"),  # 1 x 0.10 + first band's 5
        ("100", "15.00"),  # first band full; second band not reached
        ("101", "25.05"),  # + 1 x 0.05 + second band's 10
        ("100.5", "25.025"),
        ("1000", "70.00"),  # 15 + 900 x 0.05 + 10
        ("1500", "75.00"),  # + 500 x 0.01
    ],
)
def test_tiered_pricing_prices_the_units_inside_each_reached_band(units: str, total: str) -> None:
    assert price(TIERED, D(units)).total == D(total)


def test_tiered_pricing_reports_each_band_contribution() -> None:
    priced = price(TIERED, D(1500))
    assert [
        (b.lowerLimit, b.upperLimit, b.units, b.unitPrice, b.fixedPrice, b.subtotal)
        for b in priced.bands
    ] == [
        (D(0), D(100), D(100), D("0.10"), D(5), D("15.00")),
        (D(100), D(1000), D(900), D("0.05"), D(10), D("55.00")),
        (D(1000), None, D(500), D("0.01"), D(0), D("5.00")),
    ]


def test_zero_usage_reaches_no_band_so_no_fixed_price_is_charged() -> None:
    for p in (TIERED, VOLUME):
        priced = price(p, D(0))
        assert (priced.bands, priced.total) == ((), D(0))


def test_negative_units_price_as_no_usage() -> None:
    assert price(TIERED, D(-5)).total == 0
    assert price(VOLUME, D(-5)).total == 0


@pytest.mark.parametrize(
    ("units", "band", "total"),
    [
        ("1", 0, "1.00"),
        ("100", 0, "100.00"),  # exactly at the next band's lowerLimit: still the first band
        ("100.5", 1, "100.40"),  # 100.5 x 0.80 + 20
        ("101", 1, "100.80"),  # 101 x 0.80 + 20
        ("1000", 1, "820.00"),
        ("1001", 2, "550.50"),  # 1001 x 0.50 + 50
    ],
)
def test_volume_pricing_prices_all_units_at_the_reached_band(
    units: str, band: int, total: str
) -> None:
    priced = price(VOLUME, D(units))
    reached = VOLUME.pricingBands[band]
    assert priced.total == D(total)
    assert priced.unit_price == reached.unitPrice
    assert [(b.lowerLimit, b.units) for b in priced.bands] == [(reached.lowerLimit, D(units))]


def test_unit_price_is_set_only_when_one_rate_prices_every_unit() -> None:
    assert price(pricing(True, ("0", "0.25", "0")), D(10)).unit_price == D("0.25")
    assert price(TIERED, D(10)).unit_price is None
    assert price(VOLUME, D(0)).unit_price == D("1.00")


# ---- properties -------------------------------------------------------------------------

money = st.decimals(min_value=0, max_value=100, places=4)


@st.composite
def band_tables(draw: st.DrawFn, cumulative: bool) -> Pricing:
    uppers = draw(st.lists(st.integers(1, 500), max_size=4, unique=True).map(sorted))
    limits = [0, *uppers]
    bands = [
        PricingBand(lowerLimit=D(limit), unitPrice=draw(money), fixedPrice=draw(money))
        for limit in limits
    ]
    return Pricing(aggregation="a", cumulative=cumulative, pricingBands=tuple(bands))


@given(p=band_tables(cumulative=True), units=st.integers(0, 800))
def test_tiered_total_is_each_unit_at_its_own_band_plus_fixed_prices_of_reached_bands(
    p: Pricing, units: int
) -> None:
    limits = [band.lowerLimit for band in p.pricingBands]
    # Reference: the n-th unit belongs to the highest band whose lowerLimit is below n.
    per_unit = sum(
        (p.pricingBands[bisect.bisect_left(limits, n) - 1].unitPrice for n in range(1, units + 1)),
        D(0),
    )
    fixed = sum((b.fixedPrice for b in p.pricingBands if units > b.lowerLimit), D(0))
    priced = price(p, D(units))
    assert priced.total == per_unit + fixed
    assert priced.total == sum((b.subtotal for b in priced.bands), D(0))
    assert sum((b.units for b in priced.bands), D(0)) == units


@given(
    p=band_tables(cumulative=False),
    units=st.decimals(min_value=0, max_value=800, places=3),
)
def test_volume_total_is_units_times_the_reached_band_price_plus_its_fixed_price(
    p: Pricing, units: Decimal
) -> None:
    limits = [band.lowerLimit for band in p.pricingBands]
    priced = price(p, units)
    if units == 0:
        assert priced.total == 0
        return
    reached = p.pricingBands[bisect.bisect_left(limits, units) - 1]
    assert priced.total == units * reached.unitPrice + reached.fixedPrice


@given(p=band_tables(cumulative=True), a=st.integers(0, 800), b=st.integers(0, 800))
def test_more_usage_never_costs_less_with_tiers(p: Pricing, a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert price(p, D(low)).total <= price(p, D(high)).total
