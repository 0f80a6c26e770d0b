"""The native engine against the reference, differentially: the same batches, snapshots,
expiries and logs through `NativeEngine` and `ReferenceEngine` must give the same bytes
(deltas, dead letters, forwards, snapshot records), the same counts, the same answers to
every read, and the same state after recovering the same log.

Random catalogs (numeric and string fields, derived fields with random calculations,
every aggregation function), random batches (valid, invalid, duplicated, late, out of
order, huge and tiny numbers, unicode, envelopes and single messages, unusual
timestamps, redeliveries), random operation sequences (the recovery property's)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.clock import DAY_MS, HOUR_MS
from streams.schemas.catalog import (
    Aggregation,
    AggregationFunction,
    Catalog,
    DataField,
    DataFieldCategory,
    DerivedField,
    Meter,
)
from streams.schemas.numbers import encode_json
from streams.sources import Source
from streams.usage.engine import Limits, LockedPeriod, ReferenceEngine, UsageEngine
from streams.usage.metering import Message
from tests.unit import test_usage_engine_recovery as recovery
from tests.unit.test_usage_engine_differential import ACCOUNTS, BY_PARTITION
from tests.unit.test_usage_engine_differential import scenarios as fixed_catalog_scenarios
from tests.unit.usage_engine_factories import (
    AGGREGATIONS,
    CATALOG,
    NOW,
    PARTITIONS,
    T0,
    TOPIC,
    Log,
    iso,
    m,
    message,
)

native = pytest.importorskip("streams.usage.engine.native", reason="the native engine is not built")
NativeEngine = native.NativeEngine

WIDE = (T0 - 400 * DAY_MS, T0 + 400 * DAY_MS)
# as the worker runs it: two Rust engines, each folding its share of the partitions
THREADS = 2
UID_LIMIT = 3


def pair(catalog: Catalog = CATALOG, **kwargs: Any) -> tuple[ReferenceEngine, UsageEngine]:
    return ReferenceEngine(PARTITIONS, catalog, **kwargs), NativeEngine(
        PARTITIONS, catalog, **kwargs, threads=THREADS
    )


def outcome(engine: UsageEngine, batch: list[Message], now: int) -> Any:
    processed = engine.process(batch, now)
    return (
        processed.deltas,
        [r.to_bytes() for r in processed.rejected],
        processed.forwards,
        processed.stats,
    )


def answers(engine: UsageEngine, codes: dict[str, AggregationFunction]) -> Any:
    ranges = [WIDE, (T0 + 30 * 60_000, T0 + 5 * HOUR_MS + 1), (T0 + 3 * HOUR_MS, T0 + 4 * HOUR_MS)]
    return (
        {
            (account, start, bucket): engine.query(account, list(codes), start, end, bucket)
            for account in ACCOUNTS
            for start, end in ranges
            for bucket in (None, HOUR_MS, DAY_MS)
        },
        {
            (account, start): engine.period_values(account, codes, start, end)
            for account in ACCOUNTS
            for start, end in ranges
        },
        {
            (account, start, bucket): engine.query_segments(
                account, list(codes), start, end, bucket
            )
            for account in ACCOUNTS
            for start, end in ranges
            for bucket in (None, DAY_MS)
        },
        {
            (account, start): engine.period_segment_values(account, codes, start, end)
            for account in ACCOUNTS
            for start, end in ranges
        },
        [engine.accounts(range(PARTITIONS), start, end) for start, end in ranges],
        [engine.next_seq(partition) for partition in range(PARTITIONS)],
    )


def same_from_here_on(
    reference: UsageEngine, ours: UsageEngine, codes: dict[str, AggregationFunction]
) -> None:
    """Both answer alike, snapshot alike, and rebuild alike from their log."""
    assert answers(ours, codes) == answers(reference, codes)
    log = Log()
    for partition in range(PARTITIONS):
        expected = reference.snapshot(partition)
        assert ours.snapshot(partition) == expected
        log.write_round(expected)
    assert ours.expire() == reference.expire()
    rebuilt = [
        log.recover(ReferenceEngine(PARTITIONS, CATALOG)),
        NativeEngine(PARTITIONS, CATALOG, threads=THREADS),
    ]
    for key, value in log.records:
        rebuilt[1].recover(key, value)
    assert answers(rebuilt[1], codes) == answers(rebuilt[0], codes)


# --- the fixed catalog, the existing pipeline's scenarios ---------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fixed_catalog_scenarios())
def test_the_native_engine_meters_and_answers_byte_for_byte_like_the_reference(
    scenario: Any,
) -> None:
    bounds, locks, runs = scenario
    engines = pair(limits=Limits(max_uids_per_slot=UID_LIMIT))
    for engine in engines:
        for account, moments in bounds.items():
            engine.set_boundaries(account, moments)
        for account, (start, end) in locks.items():
            engine.set_locked(account, [LockedPeriod(start, end, f"{account} is locked")])
    reference, ours = engines
    for batch, now in runs:
        assert outcome(ours, batch, now) == outcome(reference, batch, now)
    same_from_here_on(reference, ours, AGGREGATIONS)


# --- random catalogs ------------------------------------------------------------------

NUMERIC = {"a": "MEASURE", "b": "INCOME", "c-d": "COST"}
STRINGS = {"s": "WHO", "t": "WHAT"}
CONSTANTS = ["0", "1", "3", "0.5", "1000", "1E+3", "2.50", "7E-5", "99999999999999999999"]
STRING_FUNCTIONS = [AggregationFunction.COUNT, AggregationFunction.UNIQUE]


def field_ref(code: str) -> str:
    return f"`{code}`" if "-" in code else code


def expressions(fields: list[str]) -> st.SearchStrategy[str]:
    names = [field_ref(f) for f in fields]
    leaves = (
        st.one_of(st.sampled_from(names), st.sampled_from(CONSTANTS))
        if names
        else st.sampled_from(CONSTANTS)
    )

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        ops = st.sampled_from(["+", "-", "*", "/", "%", "<", "<=", "==", "!=", "and", "or"])
        return st.one_of(
            st.tuples(inner, ops, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            inner.map(lambda x: f"(-{x})"),
            inner.map(lambda x: f"(not {x})"),
            st.tuples(st.sampled_from(["min", "MAX"]), st.lists(inner, min_size=1, max_size=3)).map(
                lambda t: f"{t[0]}({', '.join(t[1])})"
            ),
            st.tuples(st.sampled_from(["abs", "floor", "ceil", "round"]), inner).map(
                lambda t: f"{t[0]}({t[1]})"
            ),
            st.tuples(inner, st.integers(-3, 4)).map(lambda t: f"round({t[0]}, {t[1]})"),
            st.tuples(inner, inner, inner).map(lambda t: f"if({t[0]}, {t[1]}, {t[2]})"),
        )

    return st.recursive(leaves, extend, max_leaves=6)


SEGMENT_VALUES = ["ann", "bob", "é", "*"]


@st.composite
def routes(draw: st.DrawFn, strings: list[str]) -> dict[str, Any]:
    """Filters and segments over the meter's string fields, often none."""
    if not strings or draw(st.integers(0, 2)) == 0:
        return {}
    values = st.lists(st.sampled_from(["ann", "bob", "é", "x" * 70]), min_size=1, max_size=3)
    filters = [
        {
            "field": field,
            "operator": operator,
            "values": draw(values)[:1] if operator == "EQUALS" else draw(values),
        }
        for field, operator in draw(
            st.lists(
                st.tuples(st.sampled_from(strings), st.sampled_from(["EQUALS", "IN", "NOT_IN"])),
                max_size=2,
            )
        )
    ]
    fields = draw(st.lists(st.sampled_from(strings), max_size=2, unique=True))
    segments: list[dict[str, str]] = []
    if fields:
        picks = st.fixed_dictionaries({field: st.sampled_from(SEGMENT_VALUES) for field in fields})
        segments = draw(
            st.lists(picks, min_size=1, max_size=4, unique_by=lambda d: tuple(sorted(d.items())))
        )
    return {"filters": filters, "segmentedFields": fields, "segments": segments}


@st.composite
def catalogs(draw: st.DrawFn) -> tuple[Catalog, dict[str, AggregationFunction], list[str]]:
    numeric = draw(st.lists(st.sampled_from(list(NUMERIC)), min_size=1, max_size=3, unique=True))
    strings = draw(st.lists(st.sampled_from(list(STRINGS)), max_size=2, unique=True))
    data = [
        DataField(
            category=DataFieldCategory(NUMERIC[code]),
            code=code,
            required=draw(st.booleans()) and draw(st.booleans()),
        )
        for code in numeric
    ] + [DataField(category=DataFieldCategory(STRINGS[code]), code=code) for code in strings]
    derived = []
    known = list(numeric)
    for code in draw(st.lists(st.sampled_from(["x", "y"]), max_size=2, unique=True)):
        text = draw(expressions(known))
        derived.append(
            DerivedField(category=DataFieldCategory.MEASURE, code=code, calculation=text)
        )
        known.append(code)
    meters = {
        "m1": Meter(code="m1", dataFields=tuple(data), derivedFields=tuple(derived)),
        "m2": Meter(
            code="m2", dataFields=(DataField(category=DataFieldCategory.MEASURE, code="a"),)
        ),
    }
    aggregations: dict[str, Aggregation] = {}
    functions: dict[str, AggregationFunction] = {}
    targets = [("m1", f, list(AggregationFunction)) for f in known]
    targets += [("m1", f, STRING_FUNCTIONS) for f in strings]
    targets += [("m2", "a", [AggregationFunction.SUM])]
    for meter, field, allowed in targets:
        for function in draw(st.lists(st.sampled_from(allowed), max_size=3, unique=True)):
            code = f"{meter}_{field}_{function.value.lower()}".replace("-", "_")
            aggregations[code] = Aggregation(
                code=code,
                meter=meter,
                targetField=field,
                aggregation=function,
                **(draw(routes(strings)) if meter == "m1" else {}),
            )
            functions[code] = function
    # built directly: a calculation that does not compile makes its meter unusable
    return Catalog(meters=meters, aggregations=aggregations), functions, known


numbers = st.one_of(
    st.integers(-1000, 1000),
    st.decimals(min_value=-(10**6), max_value=10**6, places=6, allow_nan=False),
    st.sampled_from(
        [
            10**29,
            -(10**29) + 1,
            10**30,
            Decimal("99999999999999999999999999999.99999999999999999999"),
            Decimal("12345678901234567890.12345678901234567890"),
            Decimal("1E-20"),
            Decimal("1E-21"),
            Decimal("-0.000"),
            Decimal("1E+2"),
            Decimal("1E+29"),
            Decimal("123.4500"),
            "7",
            None,
            True,
        ]
    ),
)
texts = st.one_of(
    st.sampled_from(["ann", "bob", "é", "😀", "a'b", "\x00x", "x" * 70]), st.text(max_size=80)
)
stamps = st.sampled_from(
    [
        lambda ms: iso(ms),
        lambda ms: iso(ms).replace("+00:00", "Z"),
        lambda ms: iso(ms).replace("T", " "),
        lambda ms: iso(ms).replace("+00:00", "+01:00"),
        lambda ms: iso(ms)[:16] + "Z",  # no seconds: Python reads it, the fast path does not
        lambda ms: iso(ms).replace("-", "").replace(":", "")[:15] + "Z",  # basic format
        lambda ms: iso(ms)[:19] + ".1234567Z",
        lambda ms: iso(ms)[:19],  # no timezone
        lambda ms: "2026-02-30T00:00:00Z",
        lambda ms: ms,
    ]
)


@st.composite
def measurements(draw: st.DrawFn, accounts: list[str], fields: list[str]) -> Any:
    if draw(st.integers(0, 15)) == 0:  # past the dedup horizon, or too far ahead
        ms = T0 + draw(st.sampled_from([-36 * DAY_MS, 2 * DAY_MS]))
    else:  # late .. ahead, often the same ts or either side of an hour
        hours, minutes = draw(st.integers(-3, 11)), draw(st.sampled_from([0, 1, 30, 59]))
        ms = T0 + hours * HOUR_MS + minutes * 60_000 + 999
    stamp = draw(stamps) if draw(st.integers(0, 5)) == 0 else iso
    document: dict[str, Any] = {
        "uid": draw(st.sampled_from(["u0", "u1", "u2", "u3", "ü"])),
        "meter": draw(st.sampled_from(["m1"] * 8 + ["m2", "m2", "nope", "é"])),
        "account": draw(st.sampled_from(accounts)),
        "ts": stamp(ms),
    }
    for name, code in (("measure", "a"), ("income", "b"), ("cost", "c-d")):
        values = {code: draw(numbers)} if code in fields and draw(st.integers(0, 4)) else {}
        if draw(st.integers(0, 40)) == 0:  # unknown, or derived and not to be sent
            values[draw(st.sampled_from(["zz", "é", "a'b", "x"]))] = 1
        if values:
            document[name] = values
    for name, code in (("who", "s"), ("what", "t")):
        if draw(st.booleans()):
            document[name] = {code: draw(texts)}
    odd = draw(st.integers(0, 40))
    if odd == 0:
        document["ets"] = draw(st.sampled_from([iso(ms - 1), iso(ms + 5), 5, "later"]))
    elif odd == 1:
        document["unknown"] = {}
    elif odd == 2:
        document["who"] = "ann"
    elif odd == 3:
        document["uid"] = draw(st.sampled_from([None, 5, "", "u" * 201]))
    return document


@st.composite
def random_batches(draw: st.DrawFn, fields: list[str], first: int) -> list[Message]:
    out = []
    for offset in range(first, first + draw(st.integers(1, 4))):
        partition = draw(st.integers(0, PARTITIONS - 1))
        if draw(st.integers(0, 15)) == 0:
            value = draw(st.sampled_from([b"", b"{", b"[]", b'{"measurements": {}}', b'"\\ud800"']))
            out.append(Message(None, value, Source(TOPIC, partition, offset)))
            continue
        items = draw(
            st.lists(measurements(BY_PARTITION[partition], fields), min_size=1, max_size=6)
        )
        items += draw(st.lists(st.sampled_from(items), max_size=2))
        if draw(st.integers(0, 8)) == 0:  # another partition's account: forwarded
            items.append(draw(measurements(ACCOUNTS, fields)))
        document = items[0] if len(items) == 1 and draw(st.booleans()) else {"measurements": items}
        key = str(items[0].get("account")).encode()
        out.append(Message(key, encode_json(document), Source(TOPIC, partition, offset)))
    return out


@st.composite
def catalog_scenarios(draw: st.DrawFn) -> Any:
    catalog, functions, fields = draw(catalogs())
    runs = []
    offset = 0
    for _ in range(draw(st.integers(1, 3))):
        batch = draw(random_batches(fields, offset))
        offset += len(batch)
        runs.append((batch, NOW + draw(st.integers(0, HOUR_MS))))
    bounds = draw(st.lists(st.integers(-60, 12 * 60).map(lambda m: T0 + m * 60_000), max_size=3))
    return catalog, functions, runs, bounds


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalog_scenarios())
def test_random_catalogs_and_batches_meter_alike_in_both_engines(scenario: Any) -> None:
    catalog, functions, runs, bounds = scenario
    reference, ours = pair(catalog, limits=Limits(max_uids_per_slot=UID_LIMIT))
    for engine in (reference, ours):
        engine.set_boundaries("acme", bounds)
    for batch, now in runs:
        assert outcome(ours, batch, now) == outcome(reference, batch, now)
    assert answers(ours, functions) == answers(reference, functions)
    for partition in range(PARTITIONS):
        assert ours.snapshot(partition) == reference.snapshot(partition)


derived_values = st.one_of(
    st.integers(-5, 5),
    st.sampled_from(
        [
            Decimal("0.5"),
            Decimal("-2.5"),
            Decimal("1E-20"),
            10**29,
            Decimal("12345678901234567890.12345678901234567890"),
            Decimal("3.14159"),
            Decimal("-0.0001"),
            # 29 digits: any arithmetic rounds them to 28, half to even
            Decimal("1000000000000000000000000000.5"),
            Decimal("1000000000000000000000000001.5"),
            Decimal("-2.5000000000000000000000000005"),
        ]
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(["a", "b"]), derived_values, derived_values)
def test_derived_fields_are_computed_alike_to_the_last_digit(
    calculation: str, a: Any, b: Any
) -> None:
    meter = Meter(
        code="m1",
        dataFields=(
            DataField(category=DataFieldCategory.MEASURE, code="a"),
            DataField(category=DataFieldCategory.MEASURE, code="b"),
        ),
        derivedFields=(
            DerivedField(category=DataFieldCategory.MEASURE, code="x", calculation=calculation),
        ),
    )
    functions = {"x_latest": AggregationFunction.LATEST, "x_sum": AggregationFunction.SUM}
    aggregations = {
        code: Aggregation(code=code, meter="m1", targetField="x", aggregation=function)
        for code, function in functions.items()
    }
    catalog = Catalog(meters={"m1": meter}, aggregations=aggregations)
    reference, ours = pair(catalog)
    document = {
        "uid": "u",
        "meter": "m1",
        "account": "acme",
        "ts": iso(T0),
        "measure": {"a": a, "b": b},
    }
    batch = [message(0, document)]
    assert outcome(ours, batch, NOW) == outcome(reference, batch, NOW)
    assert answers(ours, functions) == answers(reference, functions)


# --- operation sequences: snapshots, expiries, redeliveries, standbys -----------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recovery.operations, st.floats(0, 1), st.booleans())
def test_both_engines_write_the_same_log_and_recover_the_same_state_from_it(
    steps: list[Any], compacted_share: float, drop_tombstones: bool
) -> None:
    settings_: dict[str, Any] = {
        "retention_days": recovery.RETENTION_DAYS,
        "limits": recovery.LIMITS,
    }
    reference, ours = pair(**settings_)
    log = Log()
    now, offset, written = NOW, 0, 0
    for step in steps:
        if step[0] != "redeliver":
            written = len(log.records)
        if step[0] == "batch":
            now += step[1] * DAY_MS
            batch = recovery.messages(step[2], now, offset)
            offset += len(batch)
            expected = reference.process(batch, now)
            got = ours.process(batch, now)
            assert got.deltas == expected.deltas and got.stats == expected.stats
            assert [r.to_bytes() for r in got.rejected] == [r.to_bytes() for r in expected.rejected]
            log.write(expected.deltas)
        elif step[0] == "snapshot":
            _, partitions, fate, cut = step
            for partition in sorted(partitions):
                round_ = reference.snapshot(partition)
                assert ours.snapshot(partition) == round_
                if fate == "cut":
                    log.records.extend((r.key, r.value) for r in round_.records[:cut])
                    continue
                log.write_round(round_)
                reference.confirm_snapshot(round_)
                ours.confirm_snapshot(round_)
                if fate == "compacted":
                    log.tombstone(round_.obsolete)
        elif step[0] == "expire":
            expired = reference.expire()
            assert ours.expire() == expired
            log.write(expired)
        elif step[0] == "redeliver":
            group = log.records[written:]
            log.records.extend(group[i % len(group)] for i in step[1] if group)
    assert answers(ours, AGGREGATIONS) == answers(reference, AGGREGATIONS)
    head = int(len(log.records) * compacted_share)
    rebuilt = pair(**settings_)
    for key, value in log.compacted(head, drop_tombstones):
        for engine in rebuilt:
            engine.recover(key, value)
    assert answers(rebuilt[1], AGGREGATIONS) == answers(rebuilt[0], AGGREGATIONS)
    for partition in range(PARTITIONS):
        assert rebuilt[1].snapshot(partition) == rebuilt[0].snapshot(partition)


# --- what only the native engine has: panics ------------------------------------------


@pytest.mark.parametrize("stage", ["validate", "fold"])
def test_a_panic_in_the_native_code_costs_that_measurement_not_the_batch(stage: str) -> None:
    engine = NativeEngine(PARTITIONS, CATALOG, threads=THREADS)
    for core in engine._cores:
        core._panic_on(stage, "boom")
    batch = [message(0, m("a"), m("boom", 5), m("b", 2)), message(1, m("c", 3, account="globex"))]
    processed = engine.process(batch, NOW)
    assert processed.stats.accepted == 3
    assert [(r.field, r.index, r.measurement["uid"]) for r in processed.rejected] == [
        ("measurement", 1, "boom")
    ]
    assert processed.rejected[0].reason.startswith("internal error: PanicException(")
    assert stage in processed.rejected[0].reason
    wide = {"calls_sum": AggregationFunction.SUM}
    assert engine.period_values("acme", wide, *WIDE) == {"calls_sum": Decimal(3)}
    # the measurement was not remembered: sent again once the fault is gone, it counts
    for core in engine._cores:
        core._panic_on(None, None)
    again = engine.process([message(2, m("boom", 5))], NOW)
    assert again.stats.accepted == 1 and again.stats.duplicates == 0
    assert engine.period_values("acme", wide, *WIDE) == {"calls_sum": Decimal(8)}


def test_a_panic_outside_a_measurement_is_a_python_error_and_the_engine_goes_on() -> None:
    engine = NativeEngine(PARTITIONS, CATALOG, threads=THREADS)
    for core in engine._cores:
        core._panic_on("commit", "acme")
    with pytest.raises(RuntimeError, match=r"internal error: PanicException\('commit failed"):
        engine.process([message(0, m("a"))], NOW)
    for core in engine._cores:
        core._panic_on(None, None)
    assert engine.process([message(1, m("b", account="globex"))], NOW).stats.accepted == 1


def test_messages_the_rust_reader_refuses_get_pythons_reason() -> None:
    reference, ours = pair()
    lone = b'{"uid":"a","meter":"api","account":"acme","ts":"%s","who":{"user":"\\ud800"}}'
    batch = [
        Message(b"acme", lone % iso(T0).encode(), Source(TOPIC, 0, 0)),
        Message(None, b'{"measurements": [', Source(TOPIC, 0, 1)),
        message(2, m("b", ts=T0 + 1)),
    ]
    expected = outcome(reference, batch, NOW)
    assert expected[3].rejected == 2
    assert outcome(ours, batch, NOW) == expected


@pytest.mark.parametrize(
    "changed",
    [
        {"ts": "2026-11-18T00:00Z"},  # no seconds: Python reads it, the fast path does not
        {"ts": "20261118T000000Z"},
        {"ts": "2026-11-18T00:00:00,5+00:00"},
        {"ts": "2026-11-18T00:00:00.1234567+00:00"},
        {"ts": "2026-11-18T00:00:00.999999999Z"},
        {"ts": "2026-11-18T00:00:00"},
        {"ts": "2026-02-30T00:00:00Z"},
        {"ets": "2026-11-17T23:00Z"},
        {"meter": "é"},
        {"meter": 7},
        {"measure": {"calls": 1, "é": 2}},
        {"measure": {"calls": 1, "gb": 2}},
        {"who": {"user": "ann", "naïve": "x"}},
        {"account": "é" * 201},
    ],
)
def test_what_the_rust_side_leaves_to_python_is_judged_like_the_reference(
    changed: dict[str, Any],
) -> None:
    reference, ours = pair()
    document = {**m("a", ts=T0 + 12 * 60 * 60_000 - 1), **changed}
    batch = [message(0, document, m("b"))]
    assert outcome(ours, batch, NOW) == outcome(reference, batch, NOW)
