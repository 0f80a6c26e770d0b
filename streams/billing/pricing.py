"""The pricing engine: aggregated usage -> billable units -> priced usage, per band.

Pure and exact: Decimal in, Decimal out, no rounding of money (the bill builder rounds
each line's subtotal once). Band edges follow Stripe's `up_to` convention: a band
covers (lowerLimit, next lowerLimit], so with bands at 0 and 100, 100 units are all
in the first band and the 101st unit is the first one in the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from streams.schemas.bill import BandUsage
from streams.schemas.catalog import (
    Aggregation,
    CompoundAggregation,
    CounterPricing,
    Pricing,
    PricingBand,
    Rounding,
)

_ZERO = Decimal(0)
_ROUNDING_MODES = {
    Rounding.UP: ROUND_CEILING,
    Rounding.DOWN: ROUND_FLOOR,
    Rounding.NEAREST: ROUND_HALF_UP,
}


@dataclass(frozen=True, slots=True)
class PricedUsage:
    """Units priced by one Pricing: what each reached band contributed, and their sum."""

    units: Decimal
    unit_price: Decimal | None
    bands: tuple[BandUsage, ...]
    total: Decimal


def quantity(raw: Decimal | None, aggregation: Aggregation | CompoundAggregation) -> Decimal:
    """Billable units from an aggregated (or compound) value.

    No usage (`None`) counts as the aggregation's `defaultValue` (0 for a compound
    aggregation, which has none). The value is divided by `quantityPerUnit`, then rounded
    to whole units: UP to the ceiling, DOWN to the floor, NEAREST half-up; NONE keeps
    the fraction.
    """
    default = aggregation.defaultValue if isinstance(aggregation, Aggregation) else _ZERO
    value = default if raw is None else raw
    if aggregation.quantityPerUnit != 1:
        value = value / aggregation.quantityPerUnit
    mode = _ROUNDING_MODES.get(aggregation.rounding)
    return value if mode is None else value.to_integral_value(rounding=mode)


def price(pricing: Pricing | CounterPricing, units: Decimal) -> PricedUsage:
    """Price `units` with the pricing's bands, tiered (cumulative) or volume.

    A band is *reached* when units > its lowerLimit; zero (or negative) usage reaches
    no band, so it costs nothing: not even the first band's fixedPrice (m3ter charges
    a band's fixed price only for usage in it).

    - Tiered (`cumulative=true`): every reached band prices the units inside it, plus
      its fixedPrice.
    - Volume (`cumulative=false`): the highest reached band prices every unit at its
      unitPrice, plus its own fixedPrice (only that band's).

    `unit_price` is the one rate every unit is priced at: the reached band's (or the
    first band's, at zero usage) for volume, the only band's for a one-band tiered
    pricing, and None for multi-band tiers.
    """
    bands = pricing.pricingBands
    last = len(bands) - 1
    # Bands are sorted by lowerLimit (the catalog checks it): the reached ones come first.
    reached: list[BandUsage] = []
    total = _ZERO
    if pricing.cumulative:
        for index, band in enumerate(bands):
            lower = band.lowerLimit
            if not units > lower:
                break
            upper = bands[index + 1].lowerLimit if index < last else None
            # what min(units, upper) gives (the first of two equal values)
            top = units if upper is None or not upper < units else upper
            used = _band_usage(band, upper, top - lower)
            reached.append(used)
            total += used.subtotal
        unit_price = bands[0].unitPrice if last == 0 else None
    else:
        index = -1
        for band in bands:
            if not units > band.lowerLimit:
                break
            index += 1
        if index >= 0:
            upper = bands[index + 1].lowerLimit if index < last else None
            used = _band_usage(bands[index], upper, units)
            reached.append(used)
            total += used.subtotal
        unit_price = bands[max(index, 0)].unitPrice
    return PricedUsage(units=units, unit_price=unit_price, bands=tuple(reached), total=total)


def _band_usage(band: PricingBand, upper: Decimal | None, units: Decimal) -> BandUsage:
    return BandUsage.strict(
        lowerLimit=band.lowerLimit,
        upperLimit=upper,
        units=units,
        unitPrice=band.unitPrice,
        fixedPrice=band.fixedPrice,
        subtotal=units * band.unitPrice + band.fixedPrice,
    )
