"""Measurements (m3ter's format): the pydantic model for the HTTP edge and JSON Schema,
and the fast validator the usage agent runs on every decoded measurement.

The fast validator builds no model per measurement: `rules_for(catalog)` compiles each
meter once (allowed codes per map, required fields, derived-field expressions) and
`CatalogRules.validate` checks a plain dict against them, returning a
`ValidMeasurement` or a `Rejection` naming the field and the rule.

Both judge numbers by one rule, `streams.schemas.numbers.exact_number`: a number is kept
exactly as sent (an exact Decimal) or refused with the reason; it is never rounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, NamedTuple

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from streams.expressions import Expression, ExpressionError, compile_expression
from streams.schemas.catalog import Catalog, Code, Meter
from streams.schemas.numbers import JSON_SCHEMA as NUMBER_SCHEMA
from streams.schemas.numbers import LIMIT as NUMBER_LIMIT
from streams.schemas.numbers import exact_number

STRING_MAPS = ("who", "what", "where", "other", "metadata")
NUMBER_MAPS = ("measure", "income", "cost")
MAX_ID_LENGTH = 200
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


# --- shared parsing rules (the model and the fast validator agree) ----------------------


def parse_timestamp(value: object) -> datetime | str:
    """An aware datetime from an ISO 8601 string, or the reason it is not one."""
    if type(value) is not str:
        return "expected an ISO 8601 date-time string"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return f"{value!r} is not an ISO 8601 date-time"
    if parsed.tzinfo is None:
        return "must carry a timezone ('Z' or an offset such as '+01:00')"
    return parsed


# --- the model -------------------------------------------------------------------------


def _timestamp(value: object) -> object:
    if isinstance(value, datetime):
        return value
    parsed = parse_timestamp(value)
    if isinstance(parsed, str):
        raise ValueError(parsed)
    return parsed


def _number(value: object) -> Decimal:
    number = exact_number(value)
    if isinstance(number, str):
        raise ValueError(number)
    return number


Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp)]
Number = Annotated[Decimal, BeforeValidator(_number), WithJsonSchema(NUMBER_SCHEMA)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class Measurement(BaseModel):
    """One usage measurement, as producers send it (structure only, not the meter)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uid: Identifier = Field(description="Unique id; a repeated uid is counted once")
    meter: Code = Field(description="Code of the meter the measurement is for")
    account: Identifier = Field(description="Code of the account that used it")
    ts: Timestamp = Field(description="When the usage happened (ISO 8601 with timezone)")
    ets: Timestamp | None = Field(default=None, description="End of the usage, if a span")
    who: dict[str, str] = Field(default_factory=dict)
    what: dict[str, str] = Field(default_factory=dict)
    where: dict[str, str] = Field(default_factory=dict)
    other: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    measure: dict[str, Number] = Field(default_factory=dict)
    income: dict[str, Number] = Field(default_factory=dict)
    cost: dict[str, Number] = Field(default_factory=dict)

    @field_validator("ets")
    @classmethod
    def _ets_not_before_ts(cls, ets: datetime | None, info: ValidationInfo) -> datetime | None:
        ts = info.data.get("ts")
        if ets is not None and ts is not None and ets < ts:
            raise ValueError("ets must not be before ts")
        return ets


# --- the fast validator ----------------------------------------------------------------


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


def derived_field_errors(meter: Meter) -> list[str]:
    """Every derived field of `meter` whose calculation does not compile, as `path: reason`."""
    return [problem.reason for problem in _compile_derived(meter) if isinstance(problem, Rejection)]


def _compile_derived(meter: Meter) -> list[tuple[str, str, Expression] | Rejection]:
    allowed = {field.code for field in meter.dataFields if field.category.is_numeric}
    out: list[tuple[str, str, Expression] | Rejection] = []
    for index, derived in enumerate(meter.derivedFields):
        try:
            expression = compile_expression(derived.calculation, allowed)
        except ExpressionError as exc:
            where = f"meters[{meter.code}].derivedFields[{index}].calculation"
            out.append(Rejection("meter", f"{where}: {exc}"))
        else:
            out.append((derived.code, derived.category.wire_key, expression))
        allowed.add(derived.code)
    return out


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
        compiled = _compile_derived(meter)
        problems = [item for item in compiled if isinstance(item, Rejection)]
        self.broken: Rejection | None = (
            Rejection("meter", f"meter {meter.code!r} cannot be used: {problems[0].reason}")
            if problems
            else None
        )
        self.derived = tuple(item for item in compiled if not isinstance(item, Rejection))

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
    return (parsed - _EPOCH) // _MILLISECOND


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
        ts = (parsed - _EPOCH) // _MILLISECOND
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
