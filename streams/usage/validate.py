"""The fast validator the usage agent runs on every decoded measurement.

It builds no model per measurement: `rules_for(catalog)` compiles each meter once
(allowed codes per map, required fields, derived-field expressions) and
`CatalogRules.validate` checks a plain dict against them, returning a
`ValidMeasurement` or a `Rejection` naming the field and the rule. It agrees with the
pydantic model of `streams.schemas.measurement` (the same timestamp and number rules;
a property test ties them together).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from streams.clock import DAY_MS, EPOCH, HOUR_MS, MILLISECOND
from streams.expressions import ExpressionError
from streams.schemas.catalog import Catalog, Meter, compile_derived
from streams.schemas.measurement import (
    MAX_ID_LENGTH,
    NUMBER_MAPS,
    STRING_MAPS,
    parse_timestamp,
)
from streams.schemas.numbers import LIMIT as NUMBER_LIMIT
from streams.schemas.numbers import exact_number


class Rejection(NamedTuple):
    field: str  # e.g. "measure.calls", "meter", "ts"
    reason: str


class ValidMeasurement(NamedTuple):
    uid: str
    meter: str
    account: str
    ts: int  # epoch milliseconds, UTC
    numbers: dict[str, Decimal]  # MEASURE, INCOME, COST and derived fields, by code
    strings: dict[str, str]  # WHO, WHAT, WHERE, OTHER, METADATA fields, by code


def _duration(ms: int) -> str:
    for unit, size in (("day", DAY_MS), ("hour", HOUR_MS), ("minute", 60_000), ("second", 1000)):
        if ms % size == 0:
            count = ms // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{ms} ms"


@dataclass(frozen=True, slots=True)
class Horizon:
    """How far from `now` a measurement's ts may be: older ones are past the dedup horizon."""

    past_ms: int = 35 * DAY_MS
    future_ms: int = HOUR_MS

    @property
    def too_old(self) -> str:
        return f"ts is outside the accepted horizon (older than {_duration(self.past_ms)})"

    @property
    def too_new(self) -> str:
        return (
            f"ts is outside the accepted horizon "
            f"(more than {_duration(self.future_ms)} in the future)"
        )


DEFAULT_HORIZON = Horizon()


class MeterRules:
    """One meter, compiled for validating measurements."""

    __slots__ = ("broken", "code", "derived", "derived_codes", "fields", "required")

    def __init__(self, meter: Meter) -> None:
        self.code = meter.code
        # map name -> the codes it may carry
        self.fields: dict[str, frozenset[str]] = {
            name: frozenset(
                field.code for field in meter.dataFields if field.category.wire_key == name
            )
            for name in (*STRING_MAPS, *NUMBER_MAPS)
        }
        self.required = tuple(
            (f"{field.category.wire_key}.{field.code}", field.code, field.category)
            for field in meter.dataFields
            if field.required
        )
        self.derived_codes = frozenset(field.code for field in meter.derivedFields)
        compiled = compile_derived(meter)
        problems = [item for item in compiled if isinstance(item, str)]
        self.broken: Rejection | None = (
            Rejection("meter", f"meter {meter.code!r} cannot be used: {problems[0]}")
            if problems
            else None
        )
        self.derived = tuple(item for item in compiled if not isinstance(item, str))

    def unknown(self, name: str, code: str) -> Rejection:
        if code in self.derived_codes:
            reason = f"field {code!r} of meter {self.code!r} is derived and cannot be sent"
        else:
            reason = f"unknown field {code!r} for meter {self.code!r} in {name}"
        return Rejection(f"{name}.{code}", reason)


_SCALARS = frozenset({"uid", "meter", "account", "ts", "ets"})
_MAPS = {**dict.fromkeys(NUMBER_MAPS, True), **dict.fromkeys(STRING_MAPS, False)}


def _bad_identifier(name: str, value: object) -> Rejection:
    if value is None:
        return Rejection(name, f"{name} is required")
    if type(value) is not str:
        return Rejection(name, "expected a string")
    return Rejection(name, f"must be 1 to {MAX_ID_LENGTH} characters long")


def _epoch_ms(name: str, value: object) -> int | Rejection:
    parsed = parse_timestamp(value)
    if isinstance(parsed, str):
        return Rejection(name, parsed)
    return (parsed - EPOCH) // MILLISECOND


class CatalogRules:
    """Every meter of one catalog, compiled; `validate` is the worker's hot path."""

    def __init__(self, catalog: Catalog) -> None:
        self.meters = {code: MeterRules(meter) for code, meter in catalog.meters.items()}

    def validate(
        self, raw: object, now_ms: int, horizon: Horizon = DEFAULT_HORIZON
    ) -> ValidMeasurement | Rejection:
        """Check one decoded measurement against its meter; compute its derived fields.

        The first problem found is returned; checks run in the order of the properties
        uid, meter, account, ts, ets, then the maps as they appear in the document.
        """
        if type(raw) is not dict:
            return Rejection("measurement", "expected a JSON object")
        try:
            uid, meter, account, ts_text = raw["uid"], raw["meter"], raw["account"], raw["ts"]
        except KeyError as exc:
            return Rejection(exc.args[0], f"{exc.args[0]} is required")
        if type(uid) is not str or not 0 < len(uid) <= MAX_ID_LENGTH:
            return _bad_identifier("uid", uid)
        rules = self.meters.get(meter) if type(meter) is str else None
        if rules is None:
            reason = "meter is required" if meter is None else f"unknown meter {meter!r}"
            return Rejection("meter", reason)
        if rules.broken is not None:
            return rules.broken
        if type(account) is not str or not 0 < len(account) <= MAX_ID_LENGTH:
            return _bad_identifier("account", account)
        try:  # parse_timestamp, inlined for the well-formed case
            parsed = datetime.fromisoformat(ts_text)
        except (TypeError, ValueError):
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            return Rejection("ts", str(parse_timestamp(ts_text)))
        ts = (parsed - EPOCH) // MILLISECOND
        if ts < now_ms - horizon.past_ms:
            return Rejection("ts", horizon.too_old)
        if ts > now_ms + horizon.future_ms:
            return Rejection("ts", horizon.too_new)
        if raw.get("ets") is not None:
            ets = _epoch_ms("ets", raw["ets"])
            if isinstance(ets, Rejection):
                return ets
            if ets < ts:
                return Rejection("ets", "ets must not be before ts")
        numbers: dict[str, Decimal] = {}
        strings: dict[str, str] = {}
        for name, values in raw.items():
            numeric = _MAPS.get(name)
            if numeric is None:
                if name in _SCALARS:
                    continue
                return Rejection(name, "unknown property")
            if type(values) is not dict:
                return Rejection(name, "expected an object")
            allowed = rules.fields[name]
            if numeric:
                for code, value in values.items():
                    if code not in allowed:
                        return rules.unknown(name, code)
                    # exact_number, with its most common case inlined
                    if type(value) is int and -NUMBER_LIMIT < value < NUMBER_LIMIT:
                        numbers[code] = Decimal(value)
                    else:
                        number = exact_number(value)
                        if isinstance(number, str):
                            return Rejection(f"{name}.{code}", number)
                        numbers[code] = number
            else:
                for code, value in values.items():
                    if code not in allowed:
                        return rules.unknown(name, code)
                    if type(value) is not str:
                        return Rejection(f"{name}.{code}", "expected a string")
                strings.update(values)
        for path, code, category in rules.required:
            if code not in numbers and code not in strings:
                return Rejection(path, f"required {category} field {code!r} missing")
        for code, name, expression in rules.derived:
            # A derived field whose inputs are absent is absent too, like any optional field.
            if numbers.keys() >= expression.fields:
                try:
                    numbers[code] = expression.evaluate(numbers)
                except ExpressionError as exc:
                    return Rejection(f"{name}.{code}", f"derived field {code!r}: {exc}")
        return ValidMeasurement(uid, meter, account, ts, numbers, strings)


_cache: tuple[Catalog, CatalogRules] | None = None


def rules_for(catalog: Catalog) -> CatalogRules:
    """The compiled rules of `catalog`, compiled once per catalog object (by identity)."""
    global _cache
    if _cache is None or _cache[0] is not catalog:
        _cache = (catalog, CatalogRules(catalog))
    return _cache[1]
