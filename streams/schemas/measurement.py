"""Measurements (m3ter's format): the pydantic model for the HTTP edge and JSON Schema,
and the parsing rules it shares with the worker's fast validator (`streams.usage.validate`).

Both judge numbers by one rule, `streams.schemas.numbers.exact_number`: a number is kept
exactly as sent (an exact Decimal) or refused with the reason; it is never rounded.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

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

from streams.schemas.catalog import Code
from streams.schemas.numbers import JSON_SCHEMA as NUMBER_SCHEMA
from streams.schemas.numbers import exact_number

STRING_MAPS = ("who", "what", "where", "other", "metadata")
NUMBER_MAPS = ("measure", "income", "cost")
MAX_ID_LENGTH = 200


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

    @field_validator(*STRING_MAPS, *NUMBER_MAPS)
    @classmethod
    def _field_names_not_empty(cls, values: dict[str, object]) -> dict[str, object]:
        if "" in values:
            raise ValueError("a field name must not be empty")
        return values

    @field_validator("ets")
    @classmethod
    def _ets_not_before_ts(cls, ets: datetime | None, info: ValidationInfo) -> datetime | None:
        ts = info.data.get("ts")
        if ets is not None and ts is not None and ets < ts:
            raise ValueError("ets must not be before ts")
        return ets
