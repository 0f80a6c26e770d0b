from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.clock import HOUR_MS
from streams.schemas.catalog import AggregationFunction, Catalog
from streams.usage.state import (
    EMPTY,
    UsageKey,
    UsageState,
    canonical,
    dedupe_by_uid,
    fold,
    from_bytes,
    hour_of,
    merge,
    merge_all,
    to_bytes,
    value,
)
from streams.usage.validate import ValidMeasurement

HOUR = 1_767_225_600_000  # 2026-01-01T00:00:00Z, an hour start
AGGREGATIONS = {
    "calls_sum": ("calls", AggregationFunction.SUM),
    "calls_min": ("calls", AggregationFunction.MIN),
    "calls_max": ("calls", AggregationFunction.MAX),
    "calls_count": ("calls", AggregationFunction.COUNT),
    "calls_mean": ("calls", AggregationFunction.MEAN),
    "calls_latest": ("calls", AggregationFunction.LATEST),
    "calls_unique": ("calls", AggregationFunction.UNIQUE),
    "users": ("user", AggregationFunction.UNIQUE),
    "user_count": ("user", AggregationFunction.COUNT),
}
CATALOG = Catalog.from_documents(
    {
        "meters": [
            {
                "code": "api",
                "dataFields": [
                    {"category": "WHO", "code": "user"},
                    {"category": "MEASURE", "code": "calls"},
                ],
            },
            {"code": "unbilled", "dataFields": [{"category": "MEASURE", "code": "calls"}]},
        ],
        "aggregations": [
            {"code": code, "meter": "api", "targetField": field, "aggregation": function}
            for code, (field, function) in AGGREGATIONS.items()
        ],
    }
)


def m(
    uid: str,
    calls: str | None = None,
    *,
    ts: int = HOUR,
    account: str = "cus_1",
    user: str | None = None,
    meter: str = "api",
) -> ValidMeasurement:
    numbers = {} if calls is None else {"calls": Decimal(calls)}
    strings = {} if user is None else {"user": user}
    return ValidMeasurement(uid, meter, account, ts, numbers, strings)


def aggregate(code: str, *measurements: ValidMeasurement, hour: int = HOUR) -> Decimal | None:
    state = fold(CATALOG, measurements).get(("cus_1", code, hour))
    return value(state, AGGREGATIONS[code][1])


def test_sum_adds_the_values_exactly() -> None:
    assert aggregate("calls_sum", m("1", "0.1"), m("2", "0.2"), m("3", "5")) == Decimal("5.3")


def test_min_and_max_pick_the_extremes() -> None:
    batch = (m("1", "3"), m("2", "-1.5"), m("3", "7"))
    assert aggregate("calls_min", *batch) == Decimal("-1.5")
    assert aggregate("calls_max", *batch) == Decimal(7)


def test_count_counts_measurements_that_carry_the_field() -> None:
    assert aggregate("calls_count", m("1", "3"), m("2"), m("3", "0")) == 2
    assert aggregate("user_count", m("1", "3", user="ada"), m("2"), m("3", user="ada")) == 2


def test_mean_divides_the_sum_by_the_count() -> None:
    assert aggregate("calls_mean", m("1", "1"), m("2", "2"), m("3")) == Decimal("1.5")
    assert aggregate("calls_mean", m("1", "1"), m("2", "1"), m("3", "2")) == Decimal(
        "1.333333333333333333333333333"
    )


def test_latest_is_the_value_with_the_greatest_ts_whatever_the_arrival_order() -> None:
    batch = (m("1", "5", ts=HOUR + 9), m("2", "7", ts=HOUR + 3), m("3", "1", ts=HOUR + 1))
    assert aggregate("calls_latest", *batch) == 5


def test_latest_breaks_a_ts_tie_by_the_greater_value() -> None:
    assert aggregate("calls_latest", m("1", "2"), m("2", "9"), m("3", "4")) == 9
    assert aggregate("calls_latest", m("1", "9"), m("2", "2")) == 9


def test_unique_counts_distinct_strings() -> None:
    batch = (m("1", user="ada"), m("2", user="bob"), m("3", user="ada"), m("4"))
    assert aggregate("users", *batch) == 2


def test_unique_tells_numbers_apart_by_value_not_by_spelling() -> None:
    assert aggregate("calls_unique", m("1", "1"), m("2", "1.0"), m("3", "2")) == 2


def test_no_usage_reads_as_none() -> None:
    assert value(None, AggregationFunction.SUM) is None
    assert value(EMPTY, AggregationFunction.COUNT) is None
    assert aggregate("calls_sum", m("1", user="ada")) is None


def test_usage_lands_in_the_hour_of_its_ts_per_account() -> None:
    batch = [
        m("1", "1", ts=HOUR + HOUR_MS - 1),
        m("2", "2", ts=HOUR + HOUR_MS),
        m("3", "4", ts=HOUR, account="cus_2"),
    ]
    sums = {key: state.sum for key, state in fold(CATALOG, batch).items() if key[1] == "calls_sum"}
    assert sums == {
        ("cus_1", "calls_sum", HOUR): Decimal(1),
        ("cus_1", "calls_sum", HOUR + HOUR_MS): Decimal(2),
        ("cus_2", "calls_sum", HOUR): Decimal(4),
    }
    assert hour_of(HOUR + HOUR_MS - 1) == HOUR


def test_only_unique_aggregations_keep_the_distinct_values() -> None:
    states = fold(CATALOG, [m("1", "3", user="ada")])
    assert states[("cus_1", "users", HOUR)].unique == {"ada"}
    assert states[("cus_1", "user_count", HOUR)].unique == frozenset()
    assert states[("cus_1", "calls_sum", HOUR)].unique == frozenset()


def test_a_meter_without_aggregations_folds_to_nothing() -> None:
    assert fold(CATALOG, [m("1", "3", meter="unbilled"), m("2", "3", meter="gone")]) == {}


def test_states_hold_numbers_in_one_canonical_spelling() -> None:
    state = fold(CATALOG, [m("1", "1.50"), m("2", "1.50")])[("cus_1", "calls_sum", HOUR)]
    assert (str(state.sum), str(state.min), str(state.max)) == ("3", "1.5", "1.5")
    assert [str(canonical(Decimal(text))) for text in ("-0", "0E-5", "1E+2", "2.500")] == [
        "0",
        "0",
        "100",
        "2.5",
    ]


def test_merging_states_equals_folding_everything_at_once() -> None:
    first = fold(CATALOG, [m("1", "2", ts=HOUR + 5), m("2", "8", user="ada")])
    second = fold(CATALOG, [m("3", "-1", ts=HOUR + 1, user="bob")])
    both = fold(
        CATALOG,
        [m("1", "2", ts=HOUR + 5), m("2", "8", user="ada"), m("3", "-1", ts=HOUR + 1, user="bob")],
    )
    for key, state in both.items():
        assert merge(first.get(key, EMPTY), second.get(key, EMPTY)) == state
    assert merge(EMPTY, both[("cus_1", "calls_sum", HOUR)]) == both[("cus_1", "calls_sum", HOUR)]


def test_merge_all_combines_hours_into_a_range() -> None:
    hours = [
        fold(CATALOG, [m(str(i), str(i), ts=HOUR + i * HOUR_MS)])[
            ("cus_1", "calls_sum", HOUR + i * HOUR_MS)
        ]
        for i in range(1, 4)
    ]
    assert value(merge_all(hours), AggregationFunction.SUM) == 6
    assert value(merge_all(hours), AggregationFunction.LATEST) == 3
    assert merge_all([]) == EMPTY


def test_serialization_round_trips_compactly_and_deterministically() -> None:
    states = fold(CATALOG, [m("1", "2.5", user="bob"), m("2", "1E+2", user="ada")])
    for state in states.values():
        assert from_bytes(to_bytes(state)) == state
    assert to_bytes(states[("cus_1", "calls_sum", HOUR)]) == (
        b'{"n":2,"s":"102.5","lo":"2.5","hi":"100","lt":1767225600000,"l":"100"}'
    )
    assert to_bytes(states[("cus_1", "users", HOUR)]) == b'{"n":2,"u":["ada","bob"]}'
    assert from_bytes(to_bytes(EMPTY)) == EMPTY


def test_dedupe_by_uid_keeps_the_first_of_each_uid() -> None:
    first, second = m("1", "1"), m("1", "2")
    assert dedupe_by_uid([first, m("2"), second]) == [first, m("2")]


# --- properties ------------------------------------------------------------------------

VALUES = st.one_of(
    st.sampled_from(["1", "1.0", "1.00", "-0", "0.000", "2.5", "2.50", "1E+2", "100"]),
    st.decimals(min_value=-(10**6), max_value=10**6, places=4, allow_nan=False).map(str),
)
MEASUREMENTS = st.lists(
    st.builds(
        m,
        uid=st.integers(0, 40).map(str),
        calls=st.none() | VALUES,
        ts=st.integers(HOUR - HOUR_MS, HOUR + 2 * HOUR_MS).map(lambda ts: ts - ts % 1000),
        account=st.sampled_from(["cus_1", "cus_2"]),
        user=st.none() | st.sampled_from(["ada", "bob", "cy"]),
    ),
    max_size=40,
)
Table = dict[UsageKey, UsageState]


def merge_tables(a: Table, b: Table) -> Table:
    out = dict(a)
    for key, state in b.items():
        out[key] = merge(out[key], state) if key in out else state
    return out


@settings(max_examples=300, deadline=None)
@given(measurements=MEASUREMENTS, data=st.data())
def test_any_split_order_and_grouping_gives_the_same_state_bytes(
    measurements: list[ValidMeasurement], data: Any
) -> None:
    unique = dedupe_by_uid(measurements)
    expected = {key: to_bytes(state) for key, state in fold(CATALOG, unique).items()}
    shuffled = data.draw(st.permutations(unique))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(shuffled)), max_size=6)))
    batches = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    tables = [fold(CATALOG, batch) for batch in batches]
    while len(tables) > 1:  # merge neighbours in a random grouping, either way round
        i = data.draw(st.integers(0, len(tables) - 2))
        left, right = tables[i], tables[i + 1]
        if data.draw(st.booleans()):
            left, right = right, left
        if data.draw(st.booleans()):  # as a table would: through bytes
            left = {key: from_bytes(to_bytes(state)) for key, state in left.items()}
        tables[i : i + 2] = [merge_tables(left, right)]
    assert {key: to_bytes(state) for key, state in tables[0].items()} == expected


def direct(function: AggregationFunction, found: list[tuple[int, Decimal | str]]) -> Decimal:
    values = [v for _, v in found]
    numbers = [v for v in values if isinstance(v, Decimal)]
    if function is AggregationFunction.COUNT:
        return Decimal(len(values))
    if function is AggregationFunction.UNIQUE:
        return Decimal(len(set(values)))
    if function is AggregationFunction.LATEST:
        latest = max(found)[1]
        assert isinstance(latest, Decimal)
        return latest
    computed: dict[AggregationFunction, Decimal] = {
        AggregationFunction.SUM: sum(numbers, Decimal(0)),
        AggregationFunction.MIN: min(numbers),
        AggregationFunction.MAX: max(numbers),
        AggregationFunction.MEAN: sum(numbers, Decimal(0)) / len(numbers),
    }
    return computed[function]


@settings(max_examples=300, deadline=None)
@given(measurements=MEASUREMENTS)
def test_every_aggregate_equals_a_direct_computation_over_the_set(
    measurements: list[ValidMeasurement],
) -> None:
    unique = dedupe_by_uid(measurements)
    states = fold(CATALOG, unique)
    expected_keys = set()
    for code, (field, function) in AGGREGATIONS.items():
        found: dict[tuple[str, int], list[tuple[int, Decimal | str]]] = defaultdict(list)
        for item in unique:
            carried = item.numbers.get(field, item.strings.get(field))
            if carried is not None:
                found[(item.account, hour_of(item.ts))].append((item.ts, carried))
        for (account, hour), values in found.items():
            expected_keys.add((account, code, hour))
            assert value(states[(account, code, hour)], function) == direct(function, values)
    assert set(states) == expected_keys
