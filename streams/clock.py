"""Time as meterline counts it: epoch milliseconds (UTC), converted exactly.

Measurements, windows, billing boundaries and commands carry epoch ms; datetimes appear
at the edges (ISO 8601 on the wire, pydantic models). Conversions use integer arithmetic,
never a float timestamp, so a boundary lands on the same millisecond everywhere.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def now_ms() -> int:
    """The wall clock in epoch ms (for horizons and schedules, never for event time)."""
    return time.time_ns() // 1_000_000


def epoch_ms(moment: datetime) -> int:
    """An aware datetime as epoch ms, exactly (sub-millisecond parts floor)."""
    return (moment - EPOCH) // MILLISECOND


def from_ms(ms: int) -> datetime:
    """Epoch ms as an aware UTC datetime."""
    return EPOCH + ms * MILLISECOND


def hour_start(ms: int) -> int:
    """The start of the UTC hour holding `ms`."""
    return ms - ms % HOUR_MS


def day_start(ms: int) -> int:
    """The start of the UTC day holding `ms`."""
    return ms - ms % DAY_MS
