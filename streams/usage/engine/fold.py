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

from streams.schemas.catalog import (
    DEFAULT_SEGMENT,
    WILDCARD,
    Aggregation,
    AggregationFunction,
    Catalog,
    FilterOperator,
    segment_id,
)
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
class Route:
    """Which measurements an aggregation with filters or segments folds, and into which
    segment: `segment(strings)` is the segment id, or None for a measurement its filters
    leave out.

    filters   (field, keep, values): keep a measurement whose value is among `values`
              (keep True: EQUALS, IN) or not (keep False: NOT_IN; a missing field is
              not among them)
    segments  (segment id, ((field, value or None for the wildcard), ...)) in the
              catalog's order: the first whose every field the measurement has, with that
              value (any value for the wildcard), is its segment
    default   the segment of a measurement that matches none (UNSEGMENTED if the
              aggregation has no segmentedFields)
    """

    filters: tuple[tuple[str, bool, frozenset[str]], ...]
    segments: tuple[tuple[str, tuple[tuple[str, str | None], ...]], ...]
    default: str

    def segment(self, strings: dict[str, str]) -> str | None:
        for field, keep, values in self.filters:
            found = strings.get(field)
            if (found is not None and found in values) is not keep:
                return None
        for segment, conditions in self.segments:
            for field, wanted in conditions:
                found = strings.get(field)
                if found is None or (wanted is not None and found != wanted):
                    break
            else:
                return segment
        return self.default


def route_of(aggregation: Aggregation) -> Route | None:
    """The aggregation's route, None when it folds every measurement unsegmented."""
    if not aggregation.filters and not aggregation.segmented:
        return None
    filters = tuple(
        (f.field, f.operator is not FilterOperator.NOT_IN, frozenset(f.values))
        for f in aggregation.filters
    )
    segments = tuple(
        (
            segment_id(segment),
            tuple(
                (field, None if segment[field] == WILDCARD else segment[field])
                for field in aggregation.segmentedFields
            ),
        )
        for segment in aggregation.segments
    )
    default = segment_id(DEFAULT_SEGMENT) if aggregation.segmented else UNSEGMENTED
    return Route(filters, segments, default)


# (cell key, kind, route): with a route, the key's segment is the route's answer
PlannedCell = tuple[CellKey, int, Route | None]


@dataclass(frozen=True, slots=True)
class Target:
    """One field of a meter and the cells (aggregation, segment) it feeds."""

    field: str
    numeric: bool
    distinct: bool  # some aggregation counts its distinct values
    cells: tuple[PlannedCell, ...]


Plan = dict[str, tuple[Target, ...]]  # meter code -> its targets


def compile_plan(catalog: Catalog) -> Plan:
    by_field: dict[tuple[str, str], list[PlannedCell]] = {}
    for code, aggregation in sorted(catalog.aggregations.items()):
        kind = KIND[aggregation.aggregation]
        key = (aggregation.meter, aggregation.targetField)
        by_field.setdefault(key, []).append(((code, UNSEGMENTED), kind, route_of(aggregation)))
    plan: dict[str, list[Target]] = {}
    for (meter_code, field_code), cells in by_field.items():
        meter = catalog.meters.get(meter_code)
        field = meter.field(field_code) if meter else None
        if field is None:
            continue  # a dangling reference; Catalog.reference_errors reports it
        numeric = field.category.is_numeric
        if not numeric:  # a string field can only be counted (and its values told apart)
            cells = [
                (key, UNIQUE if kind == UNIQUE else COUNT, route) for key, kind, route in cells
            ]
        distinct = any(kind == UNIQUE for _, kind, _ in cells)
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
            for key, kind, route in target.cells:
                if route is not None:
                    segment = route.segment(strings)
                    if segment is None:
                        continue
                    key = (key[0], segment)
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
            for key, kind, route in target.cells:
                if route is not None:
                    segment = route.segment(strings)
                    if segment is None:
                        continue
                    key = (key[0], segment)
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
