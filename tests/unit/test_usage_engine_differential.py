"""The engine against today's pipeline: random batches through `Metering.process` (with a
dict as the usage table) and through `ReferenceEngine.process` must accept, de-duplicate
and reject the same measurements, for the same reasons, and answer every query and
period the same."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streams.usage.metering as metering_module
from streams.clock import DAY_MS, HOUR_MS
from streams.schemas.numbers import encode_json
from streams.sources import Source
from streams.usage.engine import Limits, LockedPeriod, ReferenceEngine
from streams.usage.metering import Message, Metering
from streams.usage.state import UsageState, value
from streams.usage.store import merged_states, period_values
from tests.unit.usage_engine_factories import (
    AGGREGATIONS,
    CATALOG,
    NOW,
    PARTITIONS,
    T0,
    TOPIC,
    home,
    iso,
)

ACCOUNTS = ["acme", "a|b", "%7C", "é€😀", ".", "x" * 200, "globex", "stark", "initech", "a b"]
BY_PARTITION = {p: [a for a in ACCOUNTS if home(a) == p] for p in range(PARTITIONS)}
assert all(len(accounts) >= 2 for accounts in BY_PARTITION.values())
UIDS = [f"u{i}" for i in range(8)]
UID_LIMIT = 3  # uids per account-hour, small enough to be reached

exact = st.one_of(
    st.integers(-1000, 1000),
    st.decimals(min_value=-(10**6), max_value=10**6, places=4, allow_nan=False),
    st.sampled_from(
        [
            10**29,
            -(10**29) + 1,
            Decimal("99999999999999999999999999999.99999999999999999999"),
            Decimal("1E-20"),
            Decimal("-0.000"),
            Decimal("1E+2"),
            Decimal("123.4500"),
        ]
    ),
)
refused = st.sampled_from(["x", None, True, 10**31, Decimal("1E-21"), [1]])
numbers = st.integers(0, 9).flatmap(lambda pick: refused if pick == 0 else exact)
users = st.one_of(st.sampled_from(["ann", "bob", "é", "😀"]), st.text(max_size=90))
minutes = st.sampled_from([0, 1, 17, 30, 45, 59])  # often the same ts, or either side of a boundary
offsets = st.integers(0, 9).flatmap(
    lambda pick: (
        st.sampled_from([-36 * DAY_MS, 2 * DAY_MS, 0, HOUR_MS - 1, HOUR_MS])
        if pick == 0
        else st.tuples(st.integers(-3, 11), minutes).map(  # late .. in the future
            lambda at: at[0] * HOUR_MS + at[1] * 60_000 + 1234
        )
    )
)


@st.composite
def measurements(draw: st.DrawFn, accounts: list[str]) -> Any:
    document: dict[str, Any] = {
        "uid": draw(st.sampled_from(UIDS)),
        "meter": draw(st.sampled_from(["api", "api", "api", "silent", "nope"])),
        "account": draw(st.sampled_from(accounts)),
        "ts": iso(T0 + draw(offsets)),
    }
    measure = {}
    for field in ("calls",) if document["meter"] == "silent" else ("calls", "bytes"):
        if draw(st.booleans()):
            measure[field] = draw(numbers)
    if measure:
        document["measure"] = measure
    if draw(st.booleans()) and document["meter"] != "silent":
        document["who"] = {"user": draw(users)}
    odd = draw(st.integers(0, 40))
    if odd == 0:
        document["extra"] = 1
    elif odd == 1:
        document["ts"] = "yesterday"
    elif odd == 2:
        del document["uid"]
    elif odd == 3:
        return draw(st.sampled_from([1, "x", None, []]))
    return document


@st.composite
def batches(draw: st.DrawFn, first_offset: int) -> list[Message]:
    out = []
    for offset in range(first_offset, first_offset + draw(st.integers(1, 5))):
        partition = draw(st.integers(0, PARTITIONS - 1))
        if draw(st.integers(0, 12)) == 0:
            value = draw(
                st.sampled_from([b"", b"not json", b"[1,2]", b'{"measurements": 5}', b'{"a": NaN}'])
            )
            out.append(Message(b"k\xff", value, Source(TOPIC, partition, offset)))
            continue
        items = draw(st.lists(measurements(BY_PARTITION[partition]), min_size=1, max_size=6))
        items += draw(st.lists(st.sampled_from(items), max_size=2))  # repeated in the envelope
        if draw(st.integers(0, 4)) == 0:  # a burst into one account-hour
            account = draw(st.sampled_from(BY_PARTITION[partition]))
            burst = draw(st.integers(2, 2 * UID_LIMIT))
            uids = [f"burst{draw(st.integers(0, 9))}" for _ in range(burst)]
            items += [
                {"uid": uid, "meter": "api", "account": account, "ts": iso(T0 + 1234)}
                for uid in uids
            ]
        single = len(items) == 1 and draw(st.booleans())
        document = items[0] if single else {"measurements": items}
        key = str(items[0].get("account") if isinstance(items[0], dict) else "").encode()
        out.append(Message(key, encode_json(document), Source(TOPIC, partition, offset)))
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> Any:
    bounds = {
        account: draw(st.lists(st.integers(-2 * 60, 14 * 60).map(lambda m: T0 + m * 60_000)))
        for account in draw(st.sets(st.sampled_from(ACCOUNTS), max_size=4))
    }
    locks = {
        account: (T0 + start * HOUR_MS, T0 + (start + length) * HOUR_MS)
        for account, start, length in draw(
            st.lists(
                st.tuples(st.sampled_from(ACCOUNTS), st.integers(-2, 10), st.integers(1, 6)),
                max_size=6,
            )
        )
    }
    runs: list[tuple[list[Message], int]] = []
    offset = 0
    for _ in range(draw(st.integers(1, 4))):
        batch = draw(batches(offset))
        offset += len(batch)
        redeliver: bool = draw(st.booleans())
        if runs and redeliver:  # a redelivery of an earlier message
            batch.append(draw(st.sampled_from([m for earlier, _ in runs for m in earlier])))
        runs.append((batch, NOW + draw(st.integers(0, 2 * HOUR_MS))))
    return bounds, locks, runs


def rejections(items: list[Any]) -> list[bytes]:
    return sorted(item.to_bytes() for item in items)


def seen(states: dict[tuple[str, int], UsageState]) -> dict[tuple[str, int], Any]:
    return {key: (value(state, AGGREGATIONS[key[0]]), state.count) for key, state in states.items()}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_the_engine_meters_and_answers_like_todays_pipeline(scenario: Any) -> None:
    bounds, locks, runs = scenario

    def locked(account: str, ts: int) -> str | None:
        period = locks.get(account)
        inside = period is not None and period[0] <= ts < period[1]
        return f"the billing period of {account} is locked" if inside else None

    engine = ReferenceEngine(PARTITIONS, CATALOG, limits=Limits(max_uids_per_slot=UID_LIMIT))
    for account, moments in bounds.items():
        engine.set_boundaries(account, moments)
    for account, (start, end) in locks.items():
        reason = locked(account, start)
        assert reason is not None
        engine.set_locked(account, [LockedPeriod(start, end, reason)])
    metering, store = Metering(), dict[str, bytes]()
    with mock.patch.object(metering_module, "MAX_UIDS_PER_RECORD", UID_LIMIT):
        for batch, now in runs:
            today = metering.process(
                batch, CATALOG, now, store.get, locked, lambda a: bounds.get(a, [])
            )
            store.update(today.writes)
            ours = engine.process(batch, now)
            assert ours.forwards == [] and ours.stats.forwarded == 0
            assert (ours.stats.accepted, ours.stats.duplicates, ours.stats.newest_ts) == (
                today.accepted,
                today.duplicates,
                today.newest_ts,
            )
            assert rejections(ours.rejected) == rejections(today.rejected)
            assert ours.stats.rejected == len(today.rejected)

    ranges = [
        (T0 - DAY_MS, T0 + 2 * DAY_MS),
        (T0 + 30 * 60_000, T0 + 5 * HOUR_MS + 1),
        (T0 + 3 * HOUR_MS, T0 + 4 * HOUR_MS),
        *((b - DAY_MS, b) for moments in bounds.values() for b in moments[:2]),
        *((b, b + DAY_MS) for moments in bounds.values() for b in moments[:2]),
    ]
    codes = list(AGGREGATIONS)
    for account in ACCOUNTS:
        for start, end in ranges:
            assert engine.period_values(account, AGGREGATIONS, start, end) == period_values(
                store.get, account, AGGREGATIONS, start, end
            )
            for bucket_ms in (None, HOUR_MS, DAY_MS):
                bucket = None if bucket_ms is None else _bucket(bucket_ms)
                expected = merged_states(store.get, account, codes, start, end, bucket)
                assert seen(engine.query(account, codes, start, end, bucket_ms)) == seen(expected)


def _bucket(size: int) -> Any:
    return lambda window: window - window % size
