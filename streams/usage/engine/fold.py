"""Folding valid measurements into cells, one measurement at a time.

`compile_plan(catalog)` groups each meter's aggregations by target field, so a field is
read once for all the aggregations that use it; `accumulate` adds one measurement to the
cells of its window. A cell gets only what its function needs (see `KIND`). This is
`streams.usage.fold` with cells that are updated in place instead of a `UsageState` per
window and aggregation: same values, a fraction of the objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from sys import intern

from streams.schemas.catalog import AggregationFunction, Catalog
from streams.schemas.numbers import EXACT
from streams.usage.engine.state import UNSEGMENTED, Cell, CellKey, Cells
from streams.usage.state import distinct_key
from streams.usage.validate import ValidMeasurement

# What a cell keeps: SUM and MEAN count and sum, MIN count and min, MAX count and max,
# LATEST count and (ts, value), COUNT the count, UNIQUE count and the distinct values.
SUM, MIN, MAX, LATEST, COUNT, UNIQUE = range(6)
KIND = {
    AggregationFunction.SUM: SUM,
    AggregationFunction.MEAN: SUM,
    AggregationFunction.MIN: MIN,
    AggregationFunction.MAX: MAX,
    AggregationFunction.LATEST: LATEST,
    AggregationFunction.COUNT: COUNT,
    AggregationFunction.UNIQUE: UNIQUE,
}


@dataclass(frozen=True, slots=True)
class Target:
    """One field of a meter and the cells (aggregation, segment) it feeds."""

    field: str
    numeric: bool
    distinct: bool  # some aggregation counts its distinct values
    cells: tuple[tuple[CellKey, int], ...]  # (cell key, kind)


Plan = dict[str, tuple[Target, ...]]  # meter code -> its targets


def compile_plan(catalog: Catalog) -> Plan:
    by_field: dict[tuple[str, str], list[tuple[CellKey, int]]] = {}
    for code, aggregation in sorted(catalog.aggregations.items()):
        kind = KIND[aggregation.aggregation]
        key = (aggregation.meter, aggregation.targetField)
        by_field.setdefault(key, []).append(((code, UNSEGMENTED), kind))
    plan: dict[str, list[Target]] = {}
    for (meter_code, field_code), cells in by_field.items():
        meter = catalog.meters.get(meter_code)
        field = meter.field(field_code) if meter else None
        if field is None:
            continue  # a dangling reference; Catalog.reference_errors reports it
        numeric = field.category.is_numeric
        if not numeric:  # a string field can only be counted (and its values told apart)
            cells = [(key, UNIQUE if kind == UNIQUE else COUNT) for key, kind in cells]
        distinct = any(kind == UNIQUE for _, kind in cells)
        plan.setdefault(meter_code, []).append(Target(field_code, numeric, distinct, tuple(cells)))
    return {meter: tuple(targets) for meter, targets in plan.items()}


def accumulate(targets: tuple[Target, ...], cells: Cells, measurement: ValidMeasurement) -> None:
    """Add one measurement to the cells of its window (a field it lacks is not counted)."""
    numbers = measurement.numbers
    strings = measurement.strings
    ts = measurement.ts
    for target in targets:
        if target.numeric:
            number = numbers.get(target.field)
            if number is None:
                continue
            distinct = distinct_key(number) if target.distinct else ""
            for key, kind in target.cells:
                cell = cells.get(key)
                cells[key] = (
                    _first(kind, number, ts, distinct)
                    if cell is None
                    else _added(kind, cell, number, ts, distinct)
                )
        else:
            text = strings.get(target.field)
            if text is None:
                continue
            # one object for a value however many windows hold it
            distinct = intern(distinct_key(text)) if target.distinct else ""
            for key, kind in target.cells:
                cell = cells.get(key)
                if kind == UNIQUE:
                    cells[key] = _counted(cell, distinct)
                else:
                    cells[key] = (1 if cell is None else cell[0] + 1, None, None, None, None, None)


def _first(kind: int, number: Decimal, ts: int, distinct: str) -> Cell:
    if kind == SUM:
        return 1, number, None, None, None, None
    if kind == MIN:
        return 1, None, number, None, None, None
    if kind == MAX:
        return 1, None, None, number, None, None
    if kind == LATEST:
        return 1, None, None, None, (ts, number), None
    if kind == UNIQUE:
        return 1, None, None, None, None, {distinct: None}
    return 1, None, None, None, None, None


def _added(kind: int, cell: Cell, number: Decimal, ts: int, distinct: str) -> Cell:
    count, sum_, min_, max_, latest, _ = cell
    if kind == SUM:
        return (
            count + 1,
            number if sum_ is None else EXACT.add(sum_, number),
            None,
            None,
            None,
            None,
        )
    if kind == MIN:
        lower = number if min_ is None or number < min_ else min_
        return count + 1, None, lower, None, None, None
    if kind == MAX:
        upper = number if max_ is None or number > max_ else max_
        return count + 1, None, None, upper, None, None
    if kind == LATEST:
        newer = (ts, number) if latest is None or (ts, number) > latest else latest
        return count + 1, None, None, None, newer, None
    if kind == UNIQUE:
        return _counted(cell, distinct)
    return count + 1, None, None, None, None, None


def _counted(cell: Cell | None, distinct: str) -> Cell:
    """A UNIQUE cell with one more measurement of value `distinct` (its key)."""
    if cell is None or cell[5] is None:
        return 1 if cell is None else cell[0] + 1, None, None, None, None, {distinct: None}
    unique = cell[5]
    unique[distinct] = None
    return cell[0] + 1, None, None, None, None, unique
