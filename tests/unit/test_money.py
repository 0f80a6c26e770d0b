from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.money import (
    MoneyError,
    from_minor_units,
    minor_units,
    prorate,
    round_money,
    to_minor_units,
    to_stripe_amount,
)


@pytest.mark.parametrize(
    ("currency", "places"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("JPY", 0),
        ("jpy", 0),
        ("KRW", 0),
        ("VND", 0),
        ("CLP", 0),
        ("ISK", 0),
        ("UGX", 0),
        ("BHD", 3),
        ("KWD", 3),
        ("OMR", 3),
        ("JOD", 3),
        ("TND", 3),
    ],
)
def test_minor_units_per_currency(currency: str, places: int) -> None:
    assert minor_units(currency) == places


@pytest.mark.parametrize(
    ("amount", "currency", "rounded"),
    [
        ("1.005", "USD", "1.01"),
        ("1.0049999", "USD", "1.00"),
        ("-1.005", "USD", "-1.01"),
        ("2.5", "USD", "2.50"),
        ("99.5", "JPY", "100"),
        ("98.5", "JPY", "99"),
        ("1.0005", "KWD", "1.001"),
        ("1.0004", "KWD", "1.000"),
    ],
)
def test_round_money_rounds_half_up_to_the_minor_unit(
    amount: str, currency: str, rounded: str
) -> None:
    result = round_money(Decimal(amount), currency)
    assert str(result) == rounded


@pytest.mark.parametrize(
    ("amount", "currency", "units"),
    [("10.50", "USD", 1050), ("10.5", "USD", 1050), ("500", "JPY", 500), ("1.234", "KWD", 1234)],
)
def test_to_minor_units_is_exact(amount: str, currency: str, units: int) -> None:
    assert to_minor_units(Decimal(amount), currency) == units


@pytest.mark.parametrize(
    ("amount", "currency"), [("10.505", "USD"), ("0.5", "JPY"), ("1.2345", "KWD"), ("NaN", "USD")]
)
def test_to_minor_units_refuses_an_amount_finer_than_the_minor_unit(
    amount: str, currency: str
) -> None:
    with pytest.raises(MoneyError, match=currency):
        to_minor_units(Decimal(amount), currency)


def test_from_minor_units_keeps_the_currency_exponent() -> None:
    assert str(from_minor_units(1050, "USD")) == "10.50"
    assert str(from_minor_units(500, "JPY")) == "500"
    assert str(from_minor_units(1234, "KWD")) == "1.234"


@given(
    units=st.integers(min_value=-(10**15), max_value=10**15),
    currency=st.sampled_from(["USD", "JPY", "KWD"]),
)
def test_minor_units_round_trip(units: int, currency: str) -> None:
    assert to_minor_units(from_minor_units(units, currency), currency) == units


def test_stripe_takes_isk_as_a_two_decimal_amount_of_whole_kronur() -> None:
    assert to_stripe_amount(Decimal(5), "ISK") == 500
    assert to_stripe_amount(Decimal(500), "JPY") == 500
    assert to_stripe_amount(Decimal("10.50"), "USD") == 1050


def test_prorate_multiplies_before_dividing_so_exact_results_stay_exact() -> None:
    # 1.515 / 3 is exactly 0.505, a tie that rounds up; 1.515 * 0.333... would round down.
    assert prorate(Decimal("1.515"), Fraction(1, 3)) == Decimal("0.505")
    assert round_money(prorate(Decimal("1.515"), Fraction(1, 3)), "USD") == Decimal("0.51")
    assert round_money(prorate(Decimal("0.255"), Fraction(1, 3)), "USD") == Decimal("0.09")
    assert prorate(Decimal("30.15"), Fraction(1, 3)) == Decimal("10.05")
    assert prorate(Decimal("30.00"), Fraction(1)) == Decimal("30.00")
