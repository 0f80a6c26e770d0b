"""Mergeable usage state per (account, aggregation, hour of `ts`).

`fold` turns one message's valid measurements into state deltas, `merge` combines
states (a delta into stored state, or hours into any range; associative and
commutative) and `value` reads an aggregation function from a state.
quantityPerUnit, rounding and defaultValue are the pricing engine's business, not
this module's.

Numbers in a state are canonical (`canonical`): a state depends only on the values
folded into it, never on their order or on how a producer wrote them (1, 1.0, 1.00),
so any split, order or grouping of the same measurements gives the same bytes.

Numbers are exact: values arrive as exact Decimals (`streams.schemas.numbers`) and sums
are computed in `EXACT`, which never rounds (a sum needs at most as many digits as the
span of its terms, and accepted measurement numbers span at most 50). Only MEAN, a
quotient, is rounded (to 28 significant digits, like every calculation).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import reduce
from typing import Any

import orjson

from streams.clock import HOUR_MS
from streams.expressions import ARITHMETIC, ONE, ZERO
from streams.schemas.catalog import AggregationFunction, Catalog
from streams.schemas.numbers import EXACT
from streams.usage.validate import ValidMeasurement

UsageKey = tuple[str, str, int]  # account code, aggregation code, hour start (epoch ms)


@dataclass(frozen=True, slots=True)
class UsageState:
    """What one window knows about one aggregation's target field.

    Numeric parts are None for string fields (COUNT and UNIQUE only) and for no usage.
    `latest` is (ts, value) of the greatest ts; among equal ts the greater value wins.
    `unique` holds distinct values (see `distinct_key`), kept for UNIQUE aggregations only.
    """

    count: int = 0
    sum: Decimal | None = None
    min: Decimal | None = None
    max: Decimal | None = None
    latest: tuple[int, Decimal] | None = None
    unique: frozenset[str] = frozenset()


EMPTY = UsageState()


def hour_of(ts_ms: int) -> int:
    return ts_ms - ts_ms % HOUR_MS


def canonical(number: Decimal) -> Decimal:
    """The one representation of a value: no trailing zeros, whole numbers below 10**28
    without exponent. Exact: never rounds."""
    if not number:
        return ZERO  # also -0 and 0E-5
    reduced = number.normalize(EXACT)
    exponent: int = reduced.as_tuple().exponent  # type: ignore[assignment]  # finite
    if exponent > 0 and reduced.adjusted() < ARITHMETIC.prec:
        return reduced.quantize(ONE, context=EXACT)
    return reduced


# UNIQUE keeps a string value as it is up to this many characters; a longer one (or
# one that starts like a digest) is kept as a 128-bit digest, so a distinct value costs
# at most ~70 bytes of state however long it is.
MAX_DISTINCT_CHARS = 64
DIGEST_MARK = "\x00"


def distinct_key(value: Decimal | str) -> str:
    """How a value is told apart for UNIQUE: short strings as they are, long strings by
    digest, numbers by value."""
    if not isinstance(value, str):
        return str(canonical(value))
    if len(value) <= MAX_DISTINCT_CHARS and not value.startswith(DIGEST_MARK):
        return value
    digest = hashlib.blake2b(value.encode(errors="surrogatepass"), digest_size=16).hexdigest()
    return DIGEST_MARK + digest


def _either(
    pick: Callable[[Any, Any], Any], a: Any, b: Any
) -> Any:  # None means "no numbers on this side"
    return b if a is None else a if b is None else pick(a, b)


def merge(a: UsageState, b: UsageState) -> UsageState:
    """The state of the union of the measurements behind `a` and `b` (disjoint by uid)."""
    if not b.count:
        return a
    if not a.count:
        return b
    total = _either(EXACT.add, a.sum, b.sum)
    return UsageState(
        count=a.count + b.count,
        sum=None if total is None else canonical(total),
        min=_either(min, a.min, b.min),
        max=_either(max, a.max, b.max),
        latest=_either(max, a.latest, b.latest),
        unique=a.unique | b.unique,
    )


def merge_all(states: Iterable[UsageState]) -> UsageState:
    """All `states` merged: e.g. the hours of a billing period into the period."""
    return reduce(merge, states, EMPTY)


_READERS: dict[AggregationFunction, Callable[[UsageState], Decimal | None]] = {
    AggregationFunction.SUM: lambda state: state.sum,
    AggregationFunction.MIN: lambda state: state.min,
    AggregationFunction.MAX: lambda state: state.max,
    AggregationFunction.COUNT: lambda state: Decimal(state.count),
    AggregationFunction.MEAN: lambda state: (
        None if state.sum is None else ARITHMETIC.divide(state.sum, state.count)
    ),
    AggregationFunction.LATEST: lambda state: None if state.latest is None else state.latest[1],
    AggregationFunction.UNIQUE: lambda state: Decimal(len(state.unique)),
}


def value(state: UsageState | None, function: AggregationFunction) -> Decimal | None:
    """The aggregate, unscaled and unrounded; None when there was no usage."""
    if state is None or not state.count:
        return None
    return _READERS[function](state)


# --- fold ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    field: str
    keeps_unique: bool
    aggregations: tuple[tuple[str, bool], ...]  # (aggregation code, is UNIQUE)


@dataclass(frozen=True, slots=True)
class _MeterPlan:
    """The fields of one meter that aggregations target, each folded once for all of them."""

    numeric: tuple[_Target, ...]
    strings: tuple[_Target, ...]
    numeric_fields: tuple[tuple[int, str], ...]  # (index, field code), for the hot loop
    string_fields: tuple[tuple[int, str], ...]


def _plan(catalog: Catalog) -> dict[str, _MeterPlan]:
    by_field: dict[tuple[str, str], list[tuple[str, bool]]] = {}
    for code, aggregation in sorted(catalog.aggregations.items()):
        is_unique = aggregation.aggregation is AggregationFunction.UNIQUE
        by_field.setdefault((aggregation.meter, aggregation.targetField), []).append(
            (code, is_unique)
        )
    numeric: dict[str, list[_Target]] = {}
    strings: dict[str, list[_Target]] = {}
    for (meter_code, field_code), aggregations in by_field.items():
        meter = catalog.meters.get(meter_code)
        field = meter.field(field_code) if meter else None
        if field is None:
            continue  # a dangling reference; Catalog.reference_errors reports it
        keeps_unique = any(is_unique for _, is_unique in aggregations)
        target = _Target(field_code, keeps_unique, tuple(aggregations))
        kind = numeric if field.category.is_numeric else strings
        kind.setdefault(meter_code, []).append(target)
    plans = {}
    for meter_code in numeric.keys() | strings.keys():
        number_targets = tuple(numeric.get(meter_code, ()))
        string_targets = tuple(strings.get(meter_code, ()))
        plans[meter_code] = _MeterPlan(
            number_targets,
            string_targets,
            tuple(enumerate(target.field for target in number_targets)),
            tuple(enumerate(target.field for target in string_targets)),
        )
    return plans


_cache: tuple[Catalog, dict[str, _MeterPlan]] | None = None


def _plan_for(catalog: Catalog) -> dict[str, _MeterPlan]:
    global _cache
    if _cache is None or _cache[0] is not catalog:
        _cache = (catalog, _plan(catalog))
    return _cache[1]


_Numbers = tuple[list[Decimal], list[int]]  # values and their ts, in arrival order
_Group = tuple[list[_Numbers | None], list[list[str] | None]]


def fold(
    catalog: Catalog,
    measurements: Iterable[ValidMeasurement],
    window_of: Callable[[str, int], int] | None = None,
) -> dict[UsageKey, UsageState]:
    """The usage deltas of `measurements` (one message, already de-duplicated by uid).

    A measurement counts for an aggregation only if it carries the target field.
    `window_of(account, ts)` gives the start of the window `ts` falls in (default: its
    hour); the usage agent splits an hour at the account's billing boundaries.
    """
    plans = _plan_for(catalog)
    groups: dict[tuple[str, str, int], _Group] = {}
    # The hot loop only collects values; the statistics are computed per window by
    # C builtins (sum, min, max) afterwards, which is several times faster.
    for measurement in measurements:
        plan = plans.get(measurement.meter)
        if plan is None:
            continue
        ts = measurement.ts
        start = ts - ts % HOUR_MS if window_of is None else window_of(measurement.account, ts)
        key = (measurement.account, measurement.meter, start)
        group = groups.get(key)
        if group is None:
            group = groups[key] = ([None] * len(plan.numeric), [None] * len(plan.strings))
        numeric_windows, string_windows = group
        numbers = measurement.numbers
        for index, field in plan.numeric_fields:
            number = numbers.get(field)
            if number is not None:
                window = numeric_windows[index]
                if window is None:
                    numeric_windows[index] = ([number], [ts])
                else:
                    window[0].append(number)
                    window[1].append(ts)
        strings = measurement.strings
        for index, field in plan.string_fields:
            text = strings.get(field)
            if text is not None:
                texts = string_windows[index]
                if texts is None:
                    string_windows[index] = [text]
                else:
                    texts.append(text)
    out: dict[UsageKey, UsageState] = {}
    for (account, meter, hour), (numeric_windows, string_windows) in groups.items():
        plan = plans[meter]
        for target, window in zip(plan.numeric, numeric_windows, strict=True):
            if window is not None:
                _emit(out, account, hour, target, *_numbers_states(*window, target.keeps_unique))
        for target, texts in zip(plan.strings, string_windows, strict=True):
            if texts is not None:
                unique = frozenset(map(distinct_key, texts)) if target.keeps_unique else frozenset()
                plain = UsageState(len(texts))
                _emit(out, account, hour, target, plain, UsageState(len(texts), unique=unique))
    return out


def _numbers_states(
    values: list[Decimal], stamps: list[int], keeps_unique: bool
) -> tuple[UsageState, UsageState]:
    latest_ts, latest = max(zip(stamps, values, strict=True))
    plain = UsageState(
        count=len(values),
        sum=canonical(reduce(EXACT.add, values)),
        min=canonical(min(values)),
        max=canonical(max(values)),
        latest=(latest_ts, canonical(latest)),
    )
    if not keeps_unique:
        return plain, plain
    unique = frozenset(distinct_key(number) for number in values)
    return plain, UsageState(plain.count, plain.sum, plain.min, plain.max, plain.latest, unique)


def _emit(
    out: dict[UsageKey, UsageState],
    account: str,
    hour: int,
    target: _Target,
    plain: UsageState,
    with_unique: UsageState,
) -> None:
    for code, is_unique in target.aggregations:
        out[(account, code, hour)] = with_unique if is_unique else plain


def dedupe_by_uid(measurements: Iterable[ValidMeasurement]) -> list[ValidMeasurement]:
    """The first measurement of each uid, in order (a redelivery repeats a uid)."""
    seen: set[str] = set()
    out: list[ValidMeasurement] = []
    for measurement in measurements:
        if measurement.uid not in seen:
            seen.add(measurement.uid)
            out.append(measurement)
    return out


# --- table values ----------------------------------------------------------------------


def to_document(state: UsageState) -> dict[str, Any]:
    """A compact JSON-able document; Decimals as strings, the unique set sorted."""
    document: dict[str, Any] = {"n": state.count}
    if state.sum is not None:
        document["s"] = str(state.sum)
    if state.min is not None:
        document["lo"] = str(state.min)
    if state.max is not None:
        document["hi"] = str(state.max)
    if state.latest is not None:
        document["lt"] = state.latest[0]
        document["l"] = str(state.latest[1])
    if state.unique:
        document["u"] = sorted(state.unique)
    return document


def from_document(document: dict[str, Any]) -> UsageState:
    def number(key: str) -> Decimal | None:
        text = document.get(key)
        return None if text is None else Decimal(text)

    latest = document.get("l")
    return UsageState(
        count=document["n"],
        sum=number("s"),
        min=number("lo"),
        max=number("hi"),
        latest=None if latest is None else (document["lt"], Decimal(latest)),
        unique=frozenset(document.get("u", ())),
    )


def to_bytes(state: UsageState) -> bytes:
    """`to_document` as orjson bytes (the same state always gives the same bytes)."""
    return orjson.dumps(to_document(state))


def from_bytes(data: bytes) -> UsageState:
    return from_document(orjson.loads(data))
