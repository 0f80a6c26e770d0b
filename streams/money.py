"""Money arithmetic: minor units per ISO 4217 currency, half-up rounding, exact conversion.

Every amount is a `Decimal`; a float never touches money. The minor unit here is the
currency's billing precision (what a bill line is rounded to). Stripe's API amount
differs for a few currencies (`to_stripe_amount`).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

# Stripe's zero-decimal list (docs.stripe.com/currencies#zero-decimal), plus ISK, which
# has no minor unit in use but which Stripe still takes as a two-decimal amount.
ZERO_DECIMAL = frozenset(
    {
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW",
        "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF",
    }
)  # fmt: skip
THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
# Stripe wants these as two-decimal amounts that are whole units (5 ISK -> 500).
STRIPE_TWO_DECIMAL_WHOLE = frozenset({"ISK"})

_QUANTUM = {0: Decimal(1), 2: Decimal("0.01"), 3: Decimal("0.001")}


class MoneyError(ValueError):
    """An amount that cannot be expressed exactly in the currency's minor unit."""


def minor_units(currency: str) -> int:
    """Decimal places of the currency's minor unit: 0, 2 (default) or 3."""
    code = currency.upper()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round half-up (away from zero on a tie) to the currency's minor unit."""
    return amount.quantize(_QUANTUM[minor_units(currency)], rounding=ROUND_HALF_UP)


def to_minor_units(amount: Decimal, currency: str) -> int:
    """The amount as an integer count of minor units; raise `MoneyError` if not exact."""
    scaled = amount.scaleb(minor_units(currency))
    if not scaled.is_finite() or scaled != scaled.to_integral_value():
        raise MoneyError(
            f"amount {amount} is not a whole number of {currency.upper()} minor units "
            f"({minor_units(currency)} decimal places); round it first"
        )
    return int(scaled)


def from_minor_units(units: int, currency: str) -> Decimal:
    """An integer count of minor units as a Decimal amount, with the currency's exponent."""
    return Decimal(units).scaleb(-minor_units(currency))


def to_stripe_amount(amount: Decimal, currency: str) -> int:
    """The integer `amount` Stripe's API expects (Stripe's own minor-unit convention)."""
    units = to_minor_units(amount, currency)
    if currency.upper() in STRIPE_TWO_DECIMAL_WHOLE:
        return units * 100
    return units


def prorate(amount: Decimal, fraction: Fraction) -> Decimal:
    """`amount * fraction`, multiplying before dividing so that a result that is a whole
    number of minor units (or exactly half of one) comes out exact."""
    if fraction == 1:
        return amount
    return amount * fraction.numerator / fraction.denominator
