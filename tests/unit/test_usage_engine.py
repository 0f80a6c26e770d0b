"""The usage engine, behaviour by behaviour: what a batch does, what reads answer, what the
deltas and snapshots carry, how a replica recovers, what expires."""

from __future__ import annotations

import gc
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.usage.engine.reference as reference_module
from streams.clock import DAY_MS, HOUR_MS
from streams.schemas.catalog import Catalog
from streams.sources import Source
from streams.usage.engine import Limits, LockedPeriod, ReferenceEngine
from streams.usage.engine.fold import accumulate
from streams.usage.engine.reference import SEGMENT_ENVELOPE
from streams.usage.engine.state import ALWAYS_EXACT
from streams.usage.engine.wire import WireError, decode_delta, json_key, segment_value
from streams.usage.metering import Message
from streams.usage.state import distinct_key
from tests.unit.usage_engine_factories import (
    AGGREGATIONS,
    CATALOG,
    NOW,
    PARTITIONS,
    T0,
    Log,
    engine,
    home,
    m,
    message,
    raw,
)


def total(engine_: ReferenceEngine, account: str = "acme", code: str = "calls_sum") -> Any:
    wide = 400 * DAY_MS
    return engine_.period_values(account, {code: AGGREGATIONS[code]}, T0 - wide, T0 + wide)[code]


# --- process ---------------------------------------------------------------------------


def test_a_batch_gives_one_delta_per_partition_it_changed_with_that_partitions_next_seq() -> None:
    usage = engine()
    first = usage.process([message(0, m("a"), m("b")), message(1, m("c", account="globex"))], NOW)
    assert sorted((d.partition, d.seq, d.chunk, d.chunks) for d in first.deltas) == [
        (home("acme"), 1, 0, 1),
        (home("globex"), 1, 0, 1),
    ]
    second = usage.process([message(2, m("d"))], NOW)
    assert [(d.partition, d.seq) for d in second.deltas] == [(home("acme"), 2)]
    assert usage.next_seq(home("acme")) == 3 and usage.next_seq(home("globex")) == 2


def test_duplicates_in_a_batch_and_across_batches_count_once() -> None:
    usage = engine()
    first = usage.process([message(0, m("a", 2), m("b", 3), m("a", 2))], NOW)
    assert (first.stats.accepted, first.stats.duplicates) == (2, 1)
    second = usage.process([message(1, m("b", 3)), message(2, m("c", 4))], NOW)
    assert (second.stats.accepted, second.stats.duplicates) == (1, 1)
    assert total(usage) == 9


def test_a_batch_with_only_duplicates_and_rejections_gives_no_delta() -> None:
    usage = engine()
    usage.process([message(0, m("a"))], NOW)
    again = usage.process([message(1, m("a"), m("bad", "x"))], NOW)
    assert again.deltas == [] and again.stats.duplicates == 1 and again.stats.rejected == 1
    assert usage.next_seq(home("acme")) == 2


def test_the_same_uid_in_another_hour_or_for_another_account_is_not_a_duplicate() -> None:
    usage = engine()
    outcome = usage.process(
        [message(0, m("a"), m("a", ts=T0 + HOUR_MS), m("a", account="initech"))], NOW
    )
    assert (outcome.stats.accepted, outcome.stats.duplicates) == (3, 0)


def test_rejections_name_field_reason_index_and_source_and_the_rest_is_folded() -> None:
    usage = engine()
    outcome = usage.process(
        [
            message(7, m("ok"), m("bad", calls="x"), {**m("ghost"), "meter": "nope"}),
            raw(8, b"not json", partition=home("acme")),
        ],
        NOW,
    )
    assert outcome.stats.accepted == 1 and total(usage) == 1
    rejected = {(r.account, r.field, r.index, str(r.source)) for r in outcome.rejected}
    assert rejected == {
        ("acme", "measure.calls", 1, "measurements[0]@7"),
        ("acme", "meter", 2, "measurements[0]@7"),
        ("key", "value", None, "measurements[0]@8"),
    }
    letter = orjson.loads(outcome.rejected[0].to_bytes())
    assert letter["sourceOffset"] == 7 and letter["measurement"]["uid"] == "bad"


def test_a_measurement_in_a_locked_period_is_refused_with_the_lock_reason() -> None:
    usage = engine()
    usage.set_locked("acme", [LockedPeriod(T0, T0 + HOUR_MS, "the billing period is locked")])
    outcome = usage.process([message(0, m("late"), m("open", ts=T0 + HOUR_MS))], NOW)
    assert outcome.stats.accepted == 1
    assert [(r.field, r.reason) for r in outcome.rejected] == [
        ("ts", "the billing period is locked")
    ]
    usage.set_locked("acme", [])
    assert usage.process([message(1, m("late"))], NOW).stats.accepted == 1


def test_a_billing_boundary_inside_an_hour_splits_its_usage_exactly() -> None:
    boundary = T0 + 30 * 60_000
    usage = engine()
    usage.set_boundaries("acme", [boundary])
    usage.process(
        [message(0, m("before", 5, ts=boundary - 1), m("after", 7, ts=boundary), m("x", 11))],
        NOW,
    )
    calls = {"calls_sum": AGGREGATIONS["calls_sum"]}
    assert usage.period_values("acme", calls, boundary - DAY_MS, boundary) == {
        "calls_sum": Decimal(16)
    }
    assert usage.period_values("acme", calls, boundary, boundary + DAY_MS) == {
        "calls_sum": Decimal(7)
    }


def test_every_aggregation_function_is_exact_in_decimal() -> None:
    usage = engine()
    usage.process(
        [
            message(
                0,
                m("1", None, ts=T0 + 3, user="ann", measure={"calls": Decimal("0.1"), "bytes": 1}),
                m("2", Decimal("0.2"), ts=T0 + 1, user="bob"),
                m("3", 10**29, ts=T0 + 2, user="ann"),
                m("4", Decimal("-1E-20"), ts=T0 + 3, user="x" * 500),
            )
        ],
        NOW,
    )
    values = usage.period_values("acme", AGGREGATIONS, T0, T0 + HOUR_MS)
    assert values == {
        "calls_sum": Decimal("100000000000000000000000000000.29999999999999999999"),
        "calls_min": Decimal("-1E-20"),
        "calls_max": Decimal(10**29),
        "calls_count": Decimal(4),
        "calls_mean": Decimal("2.500000000000000000000000000E+28"),  # 28 digits, like today
        "calls_latest": Decimal("0.1"),  # greatest ts; on a tie the greater value
        "calls_unique": Decimal(4),
        "users": Decimal(3),
        "user_count": Decimal(4),
        "gb_sum": Decimal("0.001"),
    }


def test_long_unique_values_are_counted_apart_as_digests() -> None:
    usage = engine()
    values = ["A" * 70_000, "B" * 70_000, "A" * 70_000]
    usage.process([message(0, *(m(f"u{i}", user=v) for i, v in enumerate(values)))], NOW)
    state = usage.query("acme", ["users"], T0, T0 + HOUR_MS)[("users", 0)]
    assert state.unique == {distinct_key("A" * 70_000), distinct_key("B" * 70_000)}


def test_a_full_account_hour_dead_letters_instead_of_remembering_more_uids() -> None:
    usage = engine(limits=Limits(max_uids_per_slot=2))
    outcome = usage.process([message(0, m("a"), m("b"), m("c"), m("a"))], NOW)
    assert (outcome.stats.accepted, outcome.stats.duplicates) == (2, 1)
    assert [(r.field, r.index) for r in outcome.rejected] == [("ts", 2)]
    assert "de-duplication memory is full" in outcome.rejected[0].reason


def test_an_account_hour_too_big_for_a_delta_message_dead_letters_only_its_measurements() -> None:
    usage = engine(limits=Limits(max_delta_bytes=1200))
    big = [m(f"u{i}", user=f"user-{i}") for i in range(40)]
    outcome = usage.process([message(0, *big, m("other", 7, ts=T0 + HOUR_MS))], NOW)
    assert outcome.stats.accepted == 1 and total(usage) == 7
    assert sorted(r.index or 0 for r in outcome.rejected) == list(range(40))
    assert all("bytes of a delta message" in r.reason for r in outcome.rejected)
    # their uids were not remembered: a smaller batch of them is counted
    assert usage.process([message(1, m("u0", 5))], NOW).stats.accepted == 1


def test_an_account_hour_that_would_outgrow_a_snapshot_record_dead_letters_its_batch_only() -> None:
    usage = engine(limits=Limits(max_segment_bytes=700))
    usage.process([message(0, m("first", 1))], NOW)
    outcome = usage.process(
        [message(1, *(m(f"u{i}", 1) for i in range(40))), message(2, m("o", 7, account="initech"))],
        NOW,
    )
    assert outcome.stats.accepted == 1
    assert sorted(r.index or 0 for r in outcome.rejected) == list(range(40))
    assert all("would grow to" in r.reason and "acme" in r.reason for r in outcome.rejected)
    assert total(usage) == 1 and total(usage, "initech") == 7
    assert usage.process([message(3, m("u0", 5))], NOW).stats.accepted == 1
    assert total(usage) == 6


def test_an_unexpected_error_costs_one_measurement_not_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = accumulate  # what the reference engine calls per measurement

    def fragile(targets: Any, cells: Any, measurement: Any) -> None:
        if measurement.uid == "poison":
            raise RuntimeError("boom")
        real(targets, cells, measurement)

    monkeypatch.setattr(reference_module, "accumulate", fragile)
    usage = engine()
    outcome = usage.process([message(0, m("a", 5), m("poison"), m("b", 6))], NOW)
    assert outcome.stats.accepted == 2 and total(usage) == 11
    assert [(r.field, r.index) for r in outcome.rejected] == [("measurement", 1)]
    assert "internal error" in outcome.rejected[0].reason
    monkeypatch.setattr(reference_module, "accumulate", real)
    assert usage.process([message(1, m("poison", 1))], NOW).stats.accepted == 1


def test_a_measurement_read_from_another_accounts_partition_is_forwarded_not_folded() -> None:
    usage = engine()
    wrong = (home("acme") + 1) % PARTITIONS
    outcome = usage.process(
        [message(0, m("a", 3), m("b", 4, account="initech"), partition=wrong)], NOW
    )
    assert outcome.stats.accepted == 0 and outcome.stats.forwarded == 2 and not outcome.rejected
    assert total(usage) is None
    (forward,) = outcome.forwards
    assert (forward.partition, forward.key, forward.count) == (home("acme"), b"acme", 2)
    again = usage.process([Message(forward.key, forward.value, Source("m", home("acme"), 0))], NOW)
    assert again.stats.accepted == 2 and total(usage) == 3 and total(usage, "initech") == 4


def test_processing_without_a_catalog_is_refused_clearly() -> None:
    with pytest.raises(RuntimeError, match="set_catalog"):
        ReferenceEngine(PARTITIONS).process([message(0, m("a"))], NOW)


def test_a_new_catalog_applies_to_the_next_batch() -> None:
    usage = engine()
    usage.set_catalog(Catalog())
    outcome = usage.process([message(0, m("a"))], NOW)
    assert [(r.field, r.reason) for r in outcome.rejected] == [("meter", "unknown meter 'api'")]
    usage.set_catalog(CATALOG)
    assert usage.process([message(1, m("a"))], NOW).stats.accepted == 1


def test_processing_leaves_the_garbage_collector_as_it_found_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    usage = engine()
    assert gc.isenabled()
    usage.process([message(0, m("a"))], NOW)
    assert gc.isenabled()
    gc.disable()
    try:
        usage.process([message(1, m("b"))], NOW)
        assert not gc.isenabled()
    finally:
        gc.enable()

    def broken(*_: Any) -> None:
        raise MemoryError

    monkeypatch.setattr(reference_module._Batch, "finish", broken)
    with pytest.raises(MemoryError):
        usage.process([message(2, m("c"))], NOW)
    assert gc.isenabled()


# --- reads -----------------------------------------------------------------------------


def test_a_query_merges_windows_per_bucket_and_counts_measurements() -> None:
    usage = engine()
    usage.process(
        [message(0, m("a", 1), m("b", 2, ts=T0 + HOUR_MS), m("c", 4, ts=T0 + DAY_MS + 5))],
        T0 + DAY_MS + HOUR_MS,
    )
    by_hour = usage.query("acme", ["calls_sum"], T0, T0 + 2 * DAY_MS, HOUR_MS)
    assert {key: (s.sum, s.count) for key, s in by_hour.items()} == {
        ("calls_sum", T0): (Decimal(1), 1),
        ("calls_sum", T0 + HOUR_MS): (Decimal(2), 1),
        ("calls_sum", T0 + DAY_MS): (Decimal(4), 1),
    }
    by_day = usage.query("acme", ["calls_sum", "unknown"], T0, T0 + 2 * DAY_MS, DAY_MS)
    assert {key: s.sum for key, s in by_day.items()} == {
        ("calls_sum", T0): 3,
        ("calls_sum", T0 + DAY_MS): 4,
    }
    assert usage.query("acme", ["calls_sum"], T0 + 1, T0 + HOUR_MS) == {}
    assert usage.query("nobody", ["calls_sum"], T0, NOW) == {}


def test_a_query_touches_only_the_windows_in_its_range() -> None:
    usage = engine()
    hours = [m(f"h{h}", ts=T0 - 30 * DAY_MS + h * 7 * HOUR_MS, calls=1) for h in range(120)]
    now = T0 + 4 * DAY_MS
    usage.process([message(0, *hours)], now)

    class Counting(dict[int, Any]):
        reads = 0

        def __getitem__(self, key: int) -> Any:
            Counting.reads += 1
            return super().__getitem__(key)

    account = usage._states[home("acme")].accounts["acme"]
    account.windows = Counting(account.windows)
    values = usage.period_values("acme", {"calls_sum": AGGREGATIONS["calls_sum"]}, T0, T0 + DAY_MS)
    assert values == {"calls_sum": Decimal(4)}  # hours 0, 7, 14, 21 of the day
    assert Counting.reads == 4


def test_period_values_are_none_for_an_aggregation_without_usage() -> None:
    usage = engine()
    usage.process([message(0, m("a", calls=None, user="ann"))], NOW)
    assert usage.period_values("acme", AGGREGATIONS, T0, NOW) == {
        **dict.fromkeys(AGGREGATIONS),
        "users": Decimal(1),
        "user_count": Decimal(1),
    }


def test_accounts_lists_accounts_with_windows_in_the_range_on_the_partitions_asked() -> None:
    usage = engine()
    usage.process(
        [
            message(0, m("a"), m("b", account="initech", ts=T0 + 5 * HOUR_MS)),
            message(1, m("c", account="globex")),
            message(2, m("d", account="umbrella", calls=None, meter="silent")),
        ],
        NOW,
    )
    assert usage.accounts([home("acme")], T0, NOW) == ["acme", "initech"]
    assert usage.accounts([home("acme")], T0 + HOUR_MS, NOW) == ["initech"]
    assert usage.accounts(range(PARTITIONS), T0, T0 + 1) == ["acme", "globex"]


def test_revoking_a_partition_forgets_its_state() -> None:
    usage = engine()
    usage.process([message(0, m("a")), message(1, m("b", account="globex"))], NOW)
    usage.revoke(home("acme"))
    assert total(usage) is None and total(usage, "globex") == 1
    assert usage.next_seq(home("acme")) == 1


# --- deltas ----------------------------------------------------------------------------


def test_deltas_are_chunked_under_the_bound_with_each_accounts_usage_and_uids_together() -> None:
    usage = engine(limits=Limits(max_delta_bytes=2_000))
    accounts = ["acme", "initech", "umbrella", "hooli"]
    batch = [m(f"{a}-{i}", i, account=a, user=f"u{i}") for a in accounts for i in range(4)]
    outcome = usage.process([message(0, *batch)], NOW)
    assert outcome.stats.accepted == 16
    assert len(outcome.deltas) > 1 and {d.seq for d in outcome.deltas} == {1}
    assert [d.chunk for d in outcome.deltas] == list(range(len(outcome.deltas)))
    seen: list[str] = []
    for delta in outcome.deltas:
        assert len(delta.value) <= 2_000
        assert delta.chunks == len(outcome.deltas)
        seen.extend(decode_delta(delta.value).accounts)
    assert sorted(seen) == sorted(accounts)  # each account in exactly one message


def test_an_account_bigger_than_a_message_is_split_between_its_hours_never_within_one() -> None:
    usage = engine(limits=Limits(max_delta_bytes=900))
    batch = [m(f"u{h}-{i}", 1, ts=T0 + h * HOUR_MS) for h in range(4) for i in range(3)]
    outcome = usage.process([message(0, *batch)], NOW)
    assert outcome.stats.accepted == 12 and len(outcome.deltas) > 1
    hours = [slot for d in outcome.deltas for slot in decode_delta(d.value).accounts["acme"]]
    assert sorted(hours) == [T0 // HOUR_MS + h for h in range(4)]


def test_the_same_batches_give_the_same_delta_bytes_sorted_and_canonical() -> None:
    batches = [
        [message(0, m("a", Decimal("1.50"), user="é"), m("b", 2, account="umbrella"))],
        [message(1, m("c", Decimal("1E+2"), ts=T0 + HOUR_MS), m("d", calls=None, user="z"))],
    ]
    first, second = engine(), engine()
    one = [d for batch in batches for d in first.process(batch, NOW).deltas]
    two = [d for batch in batches for d in second.process(batch, NOW).deltas]
    assert [d.value for d in one] == [d.value for d in two]
    for delta in one:
        assert delta.value == orjson.dumps(orjson.loads(delta.value), option=orjson.OPT_SORT_KEYS)
    assert b'"s":"1.5"' in one[0].value and b'"s":"100"' in one[1].value


# --- apply, snapshots, recovery --------------------------------------------------------


def test_applying_a_delta_twice_counts_it_once() -> None:
    usage, replica = engine(), engine()
    (delta,) = usage.process([message(0, m("a", 5))], NOW).deltas
    assert replica.apply(delta.value).applied
    assert not replica.apply(delta.value).applied
    assert total(replica) == 5 and replica.next_seq(home("acme")) == 2


def test_a_replica_that_applied_the_deltas_recognises_a_redelivered_batch() -> None:
    usage, replica = engine(), engine()
    batch = [message(0, m("a", 5), m("b", 1))]
    for delta in usage.process(batch, NOW).deltas:
        replica.apply(delta.value)
    again = replica.process(batch, NOW)
    assert (again.stats.accepted, again.stats.duplicates, again.deltas) == (0, 2, [])


def test_recovery_from_a_snapshot_and_the_deltas_after_it_answers_like_the_original() -> None:
    usage, log = engine(), Log()
    log.write(usage.process([message(0, m("a", 1), m("b", 2, ts=T0 + HOUR_MS))], NOW).deltas)
    round_ = usage.snapshot(home("acme"))
    log.write_round(round_)
    usage.confirm_snapshot(round_)
    log.tombstone(round_.obsolete)
    assert log.deltas == []
    log.write(usage.process([message(1, m("c", 4)), message(2, m("a", 1))], NOW).deltas)
    replica = log.recover(engine())
    assert total(replica) == 7 and replica.next_seq(home("acme")) == usage.next_seq(home("acme"))
    assert replica.process([message(3, m("c", 4))], NOW).stats.duplicates == 1


def test_a_delta_older_than_the_snapshot_floor_is_skipped_even_before_compaction() -> None:
    usage, log = engine(), Log()
    log.write(usage.process([message(0, m("a", 1))], NOW).deltas)
    round_ = usage.snapshot(home("acme"))
    log.write_round(round_)
    usage.confirm_snapshot(round_)  # its deltas are not tombstoned (yet)
    replica = log.recover(engine())
    assert total(replica) == 1


def test_a_round_cut_short_leaves_the_deltas_and_the_next_round_writes_its_segments_again() -> None:
    usage, log = engine(), Log()
    log.write(
        usage.process([message(0, m("a", 1)), message(1, m("b", 2, ts=T0 + HOUR_MS))], NOW).deltas
    )
    failed = usage.snapshot(home("acme"))
    log.records.append((failed.records[0].key, failed.records[0].value))  # then it failed
    replica = log.recover(engine())
    assert total(replica) == 3  # the restored segment skips the deltas it holds
    log.write(usage.process([message(2, m("c", 4, account="initech"))], NOW).deltas)
    round_ = usage.snapshot(home("acme"))
    assert len(round_.records) == 3  # both segments of the failed round, and the new one
    log.write_round(round_)
    usage.confirm_snapshot(round_)
    log.tombstone(round_.obsolete)
    replica = log.recover(engine())
    assert total(replica) == 3 and total(replica, "initech") == 4


def test_a_batch_whose_delta_was_cut_by_a_crash_is_counted_once_when_processed_again() -> None:
    usage, log = engine(limits=Limits(max_delta_bytes=700)), Log()
    batch = [message(0, *(m(f"{a}-1", 1, account=a) for a in ("acme", "initech", "umbrella")))]
    deltas = usage.process(batch, NOW).deltas
    assert len(deltas) == 3
    log.write(deltas[:1])  # the worker died before the rest was acknowledged
    restarted = log.recover(engine(limits=Limits(max_delta_bytes=700)))
    again = restarted.process(batch, NOW)  # the batch was not committed: it comes again
    assert (again.stats.accepted, again.stats.duplicates) == (2, 1)
    assert {d.seq for d in again.deltas} == {2}
    log.write(again.deltas)
    final = log.recover(engine())
    assert [total(final, a) for a in ("acme", "initech", "umbrella")] == [1, 1, 1]


def test_a_worker_reading_its_own_log_again_after_a_rebalance_keeps_what_it_has() -> None:
    usage, log = engine(), Log()
    log.write(usage.process([message(0, m("a", 1))], NOW).deltas)
    round_ = usage.snapshot(home("acme"))
    log.write_round(round_)
    usage.confirm_snapshot(round_)
    log.write(usage.process([message(1, m("b", 2))], NOW).deltas)
    log.recover(usage, compacted=False)  # faust reads the changelog again from the start
    assert total(usage) == 3 and usage.next_seq(home("acme")) == 3
    log.write(usage.process([message(2, m("c", 4))], NOW).deltas)
    assert total(log.recover(engine())) == 7


def test_a_segment_after_deltas_of_its_round_replaces_what_they_built() -> None:
    usage, log = engine(), Log()
    log.write(usage.process([message(0, m("a", 1))], NOW).deltas)
    log.write(usage.process([message(1, m("b", 2))], NOW).deltas)
    round_ = usage.snapshot(home("acme"))
    log.write_round(round_)
    usage.confirm_snapshot(round_)
    log.tombstone(round_.obsolete)
    # compaction removed the first delta but not the second (yet): a reader sees seq 2
    # alone, then the segment holding both
    replica = engine()
    first_key = log.records[0][0]
    for key, value in log.records:
        if key != first_key:
            replica.recover(key, value)
    assert total(replica) == 3


def test_a_snapshot_tombstones_a_segment_that_expired() -> None:
    usage, log = engine(retention_days=2), Log()
    log.write(usage.process([message(0, m("old", 1))], NOW).deltas)
    first = usage.snapshot(home("acme"))
    usage.confirm_snapshot(first)
    log.write_round(first)
    later = NOW + 40 * DAY_MS  # past the retention and the dedup horizon
    log.write(usage.process([message(1, m("new", 2, ts=later))], later).deltas)
    log.write(usage.expire())
    round_ = usage.snapshot(home("acme"))
    assert (round_.records[0].key, round_.records[0].value) == (
        f"acme|{T0 // HOUR_MS}".encode(),
        None,
    )
    log.write_round(round_)
    usage.confirm_snapshot(round_)
    log.tombstone(round_.obsolete)
    replica = log.recover(engine(retention_days=2), compacted=False)
    assert total(replica) == 2


def test_an_unreadable_delta_is_refused_naming_the_field_and_changes_nothing() -> None:
    usage, replica = engine(), engine()
    (delta,) = usage.process([message(0, m("a", 1), m("b", 2, ts=T0 + HOUR_MS))], NOW).deltas
    document = orjson.loads(delta.value)
    slots = document["accounts"]["acme"]
    _, second = sorted(slots)  # the first hour is fine, the second is not
    slots[second]["w"] = {"x": {}}
    with pytest.raises(WireError, match=rf"delta.accounts\['acme'\]\[{second}\].w\[x\]"):
        replica.apply(orjson.dumps(document))
    assert total(replica) is None and replica.next_seq(home("acme")) == 2
    with pytest.raises(WireError, match=r"delta.v: version 2 is not 1"):
        replica.apply(orjson.dumps({**orjson.loads(delta.value), "v": 2}))
    assert replica.apply(delta.value).applied and total(replica) == 3


def test_a_delta_naming_an_account_of_another_partition_is_refused() -> None:
    usage = engine()
    (delta,) = usage.process([message(0, m("a", 1))], NOW).deltas
    document = orjson.loads(delta.value)
    document["accounts"]["globex"] = document["accounts"].pop("acme")
    with pytest.raises(WireError, match="does not live on partition"):
        engine().apply(orjson.dumps(document))


# --- retention -------------------------------------------------------------------------


def test_expire_drops_uids_past_the_dedup_horizon_measured_from_the_newest_ts() -> None:
    usage, replica = engine(), engine()

    def fold(offset: int, ts: int) -> None:
        for delta in usage.process([message(offset, m(f"u{offset}", 1, ts=ts))], ts).deltas:
            replica.apply(delta.value)

    fold(0, T0)
    assert usage.expire() == []  # the newest ts is still T0, whatever the clock says
    fold(1, T0 + 36 * DAY_MS)
    assert usage.expire() == []  # 36 days: the horizon (35 days) plus a day
    fold(2, T0 + 36 * DAY_MS + HOUR_MS)
    (expiry,) = usage.expire()
    newest_slot = (T0 + 36 * DAY_MS + HOUR_MS) // HOUR_MS
    assert decode_delta(expiry.value).expire == (newest_slot - 36 * 24, newest_slot - 400 * 24)
    replica.apply(expiry.value)
    for engine_ in (usage, replica):
        assert total(engine_) == 3  # the windows stay
        assert T0 // HOUR_MS not in engine_._states[home("acme")].uids.slots()
        assert (T0 + 36 * DAY_MS) // HOUR_MS in engine_._states[home("acme")].uids.slots()
    assert usage.expire() == []


def test_expire_drops_windows_past_the_retention_and_a_replica_drops_the_same() -> None:
    usage, replica = engine(retention_days=3), engine(retention_days=3)
    for day in range(5):
        ts = T0 + day * DAY_MS
        for delta in usage.process([message(day, m(f"d{day}", day + 1, ts=ts))], ts).deltas:
            replica.apply(delta.value)
    for delta in usage.expire():
        replica.apply(delta.value)
    for engine_ in (usage, replica):
        assert total(engine_) == 2 + 3 + 4 + 5
        assert engine_.accounts([home("acme")], T0, T0 + DAY_MS) == []
    assert usage.expire() == []


exact_numbers = st.one_of(
    st.integers(-(10**29), 10**29),
    st.decimals(min_value=-(10**9), max_value=10**9, places=20, allow_nan=False),
    st.sampled_from([Decimal("1E-20"), Decimal("1E+29"), Decimal("0.5"), Decimal("-7.25")]),
)
# Derived values 600 digits apart: their sums are far longer than any piece that adds them.
SPREAD = "if(x > 5, x * 1E300, x / 1E300)"
WIDE = Catalog.from_documents(
    {
        "meters": [
            {
                "code": "wide",
                "dataFields": [{"category": "MEASURE", "code": "x"}],
                "derivedFields": [
                    {"category": "MEASURE", "code": f"d{i}", "calculation": SPREAD}
                    for i in range(4)
                ],
            }
        ],
        "aggregations": [
            {"code": f"s{i}", "meter": "wide", "targetField": f"d{i}", "aggregation": "SUM"}
            for i in range(4)
        ],
    }
)


@settings(max_examples=150, deadline=None)
@given(
    st.booleans(),
    st.lists(
        st.lists(
            st.tuples(exact_numbers, st.none() | st.text(max_size=70)), min_size=1, max_size=6
        ),
        min_size=1,
        max_size=10,
    ),
)
def test_a_segments_size_bound_never_falls_below_its_exact_size(
    wide: bool, batches: list[list[tuple[Decimal, str | None]]]
) -> None:
    # The cheap growth check relies on it: below the bound, no exact measurement is needed.
    usage = ReferenceEngine(PARTITIONS, WIDE) if wide else engine()
    state = usage._state(home("acme"))
    for number, batch in enumerate(batches):
        items = [
            m(f"{number}-{i}", None, meter="wide", measure={"x": calls})
            if wide
            else m(f"{number}-{i}", calls, user=user)
            for i, (calls, user) in enumerate(batch)
        ]
        usage.process([message(number, *items)], NOW)
        for slot, sizes in state.sizes.items():
            for account, size in sizes.items():
                if size is None or size == ALWAYS_EXACT:
                    continue
                windows, hashes = state.segment(account, slot)
                value = segment_value(
                    home(account), account, slot, state.seq + 1, windows, hashes or ()
                )
                assert size + SEGMENT_ENVELOPE + len(json_key(account)) >= len(value)
