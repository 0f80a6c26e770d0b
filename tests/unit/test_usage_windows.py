"""Usage windows split at billing boundaries, so periods that start off the hour are exact."""

from __future__ import annotations

from decimal import Decimal

import orjson

from streams.schemas.catalog import AggregationFunction, Catalog
from streams.sources import Source
from streams.usage.metering import Message, Metering
from streams.usage.store import period_values

HOUR = 3_600_000
T0 = 1_795_000_000_000 - 1_795_000_000_000 % HOUR  # an hour start
CATALOG = Catalog.from_documents(
    {
        "meters": [{"code": "api", "dataFields": [{"category": "MEASURE", "code": "calls"}]}],
        "aggregations": [
            {"code": "calls", "meter": "api", "targetField": "calls", "aggregation": "SUM"}
        ],
    }
)
SUM_OF_CALLS = {"calls": AggregationFunction.SUM}


def message(offset: int, uid: str, ts_ms: int, calls: int) -> Message:
    from datetime import UTC, datetime

    body = {
        "uid": uid,
        "meter": "api",
        "account": "acme",
        "ts": datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(),
        "measure": {"calls": calls},
    }
    return Message(b"acme", orjson.dumps(body), Source("measurements", 0, offset))


def test_a_period_boundary_inside_an_hour_splits_its_usage_exactly() -> None:
    boundary = T0 + 30 * 60_000  # a period ends (and the next starts) at :30
    store: dict[str, bytes] = {}
    outcome = Metering().process(
        [
            message(0, "before", boundary - 1, 5),
            message(1, "after", boundary, 7),
            message(2, "later", boundary + 20 * 60_000, 11),
        ],
        CATALOG,
        now_ms=T0 + HOUR,
        read=store.get,
        boundaries=lambda account: [boundary],
    )
    store.update(outcome.writes)
    first = period_values(store.get, "acme", SUM_OF_CALLS, boundary - 30 * 86_400_000, boundary)
    second = period_values(store.get, "acme", SUM_OF_CALLS, boundary, boundary + 30 * 86_400_000)
    assert first == {"calls": Decimal(5)}
    assert second == {"calls": Decimal(18)}


def test_without_boundaries_windows_are_whole_hours() -> None:
    store: dict[str, bytes] = {}
    outcome = Metering().process(
        [message(0, "a", T0 + 10, 1), message(1, "b", T0 + HOUR - 1, 2)],
        CATALOG,
        now_ms=T0 + HOUR,
        read=store.get,
    )
    store.update(outcome.writes)
    assert period_values(store.get, "acme", SUM_OF_CALLS, T0, T0 + HOUR) == {"calls": Decimal(3)}
    assert period_values(store.get, "acme", SUM_OF_CALLS, T0 + 1, T0 + HOUR) == {"calls": None}
