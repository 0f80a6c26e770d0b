"""Counter adjustments (m3ter's CounterAdjustment): an account's new count of a counter.

`value` is the new absolute count from `date` on (15 seats that become 20 are adjusted to
20, not by +5), a whole number, never negative. `date` is an ISO 8601 date (the day
starts at 00:00 UTC, m3ter's granularity) or a date-time with a timezone (a Stripe quantity
change, a period only minutes long). `uid` is the caller's id: the same adjustment sent
again is applied once. Two adjustments of one counter for the same moment: the one
received last counts (`receivedAt`, then `uid`).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BeforeValidator, Field, StrictInt, WithJsonSchema

from streams.schemas.catalog import Code, Frozen
from streams.schemas.measurement import MAX_ID_LENGTH, parse_timestamp

MAX_COUNT = 10**12
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_adjustment_date(value: object) -> object:
    """An aware datetime (UTC) from an ISO 8601 date or date-time with timezone."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE.match(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a calendar date") from None
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    parsed = parse_timestamp(value)
    if isinstance(parsed, str):
        raise ValueError(
            f"expected an ISO 8601 date (2024-04-16) or date-time with timezone: {parsed}"
        )
    return parsed.astimezone(UTC)


AdjustmentDate = Annotated[
    AwareDatetime,
    BeforeValidator(parse_adjustment_date),
    WithJsonSchema(
        {
            "type": "string",
            "description": "ISO 8601 date (00:00 UTC) or date-time with timezone",
            "examples": ["2024-04-16", "2024-04-16T09:30:00Z"],
        }
    ),
]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class CounterAdjustmentRequest(Frozen):
    """The body of `POST /organizations/{orgId}/counteradjustments`."""

    uid: Identifier = Field(description="The caller's id: an adjustment sent again counts once")
    account: Identifier = Field(description="Code of the account")
    counter: Code = Field(description="Code of the counter (catalog `counters`)")
    date: AdjustmentDate = Field(description="From when the account has `value` units")
    value: Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)] = Field(
        description="The new count (absolute, not a difference); a whole number"
    )
    purchaseOrderNumber: str | None = Field(default=None, max_length=200)


class CounterAdjustment(CounterAdjustmentRequest):
    """A `counter.adjustments` record: the request, when it was received, and where from."""

    receivedAt: int = Field(ge=0, description="Epoch ms the edge (or Stripe) saw it")
    source: Literal["api", "stripe"] = "api"
