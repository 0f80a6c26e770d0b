"""Meter filters and segmented aggregations in the usage engines: what a measurement is
folded into, and how usage per segment is read (both engines, the same answers)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from streams.clock import DAY_MS, HOUR_MS
from streams.schemas.catalog import AggregationFunction, Catalog
from streams.usage.engine import ReferenceEngine, UsageEngine
from tests.unit.usage_engine_factories import NOW, PARTITIONS, T0, iso, message

SUM = AggregationFunction.SUM
RANGE = (T0 - DAY_MS, T0 + DAY_MS)

CATALOG = Catalog.from_documents(
    {
        "meters": [
            {
                "code": "api",
                "dataFields": [
                    {"category": "WHO", "code": "user"},
                    {"category": "WHAT", "code": "status"},
                    {"category": "WHERE", "code": "region"},
                    {"category": "WHERE", "code": "provider"},
                    {"category": "MEASURE", "code": "calls"},
                ],
            }
        ],
        "aggregations": [
            {"code": "calls", "meter": "api", "targetField": "calls", "aggregation": "SUM"},
            {
                "code": "ok_calls",
                "meter": "api",
                "targetField": "calls",
                "aggregation": "SUM",
                "filters": [{"field": "status", "values": ["success"]}],
            },
            {
                "code": "paid_calls",
                "meter": "api",
                "targetField": "calls",
                "aggregation": "SUM",
                "filters": [
                    {"field": "status", "operator": "IN", "values": ["success", "partial"]},
                    {"field": "user", "operator": "NOT_IN", "values": ["test", "internal"]},
                ],
            },
            {
                "code": "regional_calls",
                "meter": "api",
                "targetField": "calls",
                "aggregation": "SUM",
                "segmentedFields": ["region", "provider"],
                "segments": [
                    {"region": "eu", "provider": "aws"},
                    {"region": "eu", "provider": "*"},
                    {"region": "us", "provider": "*"},
                ],
            },
            {
                "code": "regional_users",
                "meter": "api",
                "targetField": "user",
                "aggregation": "UNIQUE",
                "filters": [{"field": "status", "values": ["success"]}],
                "segmentedFields": ["region"],
                "segments": [{"region": "eu"}],
            },
        ],
    }
)
EU_AWS, EU, US, DEFAULT = (
    '{"provider":"aws","region":"eu"}',
    '{"provider":"*","region":"eu"}',
    '{"provider":"*","region":"us"}',
    "{}",
)


def native(partitions: int, catalog: Catalog) -> UsageEngine:
    module = pytest.importorskip("streams.usage.engine.native", reason="not built")
    engine: UsageEngine = module.NativeEngine(partitions, catalog)
    return engine


@pytest.fixture(params=[ReferenceEngine, native], ids=["reference", "native"])
def engine(request: pytest.FixtureRequest) -> UsageEngine:
    made: UsageEngine = request.param(PARTITIONS, CATALOG)
    return made


def call(uid: str, calls: int, ts: int = T0, **strings: str) -> dict[str, Any]:
    document: dict[str, Any] = {"uid": uid, "meter": "api", "account": "acme", "ts": iso(ts)}
    document["measure"] = {"calls": calls}
    for name, fields in (("who", ("user",)), ("what", ("status",))):
        given = {f: strings.pop(f) for f in fields if f in strings}
        if given:
            document[name] = given
    if strings:
        document["where"] = strings
    return document


def test_a_filtered_aggregation_folds_only_the_measurements_that_meet_its_filters(
    engine: UsageEngine,
) -> None:
    processed = engine.process(
        [
            message(
                0,
                call("a", 1, status="success", user="ann"),
                call("b", 10, status="failure", user="ann"),
                call("c", 100, status="partial", user="test"),
                call("d", 1000, status="partial"),  # no user: not among the excluded ones
                call("e", 10000),  # no status: EQUALS and IN leave it out
            )
        ],
        NOW,
    )
    assert processed.stats.accepted == 5 and not processed.rejected
    values = engine.period_values(
        "acme", {"calls": SUM, "ok_calls": SUM, "paid_calls": SUM}, *RANGE
    )
    assert values == {"calls": Decimal(11111), "ok_calls": Decimal(1), "paid_calls": Decimal(1001)}


def test_a_measurement_goes_to_the_first_segment_it_matches_or_to_the_default_one(
    engine: UsageEngine,
) -> None:
    engine.process(
        [
            message(
                0,
                call("a", 1, region="eu", provider="aws"),  # the first, not the wildcard
                call("b", 10, region="eu", provider="gcp"),
                call("c", 100, region="us", provider="aws"),
                call("d", 1000, region="us"),  # no provider: "*" needs a value
                call("e", 10000, region="apac", provider="aws"),
            )
        ],
        NOW,
    )
    by_segment = engine.period_segment_values("acme", {"regional_calls": SUM}, *RANGE)
    assert by_segment == {
        ("regional_calls", EU_AWS): Decimal(1),
        ("regional_calls", EU): Decimal(10),
        ("regional_calls", US): Decimal(100),
        ("regional_calls", DEFAULT): Decimal(11000),
    }
    # over all its segments, a segmented aggregation is the sum of its usage
    assert engine.period_values("acme", {"regional_calls": SUM}, *RANGE) == {
        "regional_calls": Decimal(11111)
    }


def test_segments_and_filters_combine_and_query_by_segment_and_day(engine: UsageEngine) -> None:
    engine.process(
        [
            message(
                0,
                call("a", 1, user="ann", status="success", region="eu"),
                call("b", 1, user="bob", status="success", region="eu"),
                call("c", 1, user="cid", status="failure", region="eu"),
                call("d", 1, user="ann", status="success", region="us", ts=T0 + 11 * HOUR_MS),
            )
        ],
        NOW,
    )
    states = engine.query_segments("acme", ["regional_users", "calls"], *RANGE, DAY_MS)
    found = {key: (state.count, sorted(state.unique)) for key, state in states.items()}
    assert found == {
        ("calls", "", T0): (4, []),
        ("regional_users", '{"region":"eu"}', T0): (2, ["ann", "bob"]),
        ("regional_users", DEFAULT, T0): (1, ["ann"]),
    }
    # without segments, the states of the segments are merged (ann counts once)
    merged = engine.query("acme", ["regional_users"], *RANGE)
    assert merged[("regional_users", 0)].count == 3
    assert len(merged[("regional_users", 0)].unique) == 2
