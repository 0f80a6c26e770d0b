"""The de-duplication memory in RocksDB (`METERLINE_STORE=rocksdb`) behaves exactly like
the one in Python dicts, and keeps the Python heap flat however many uids it holds."""

from __future__ import annotations

import tempfile
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from random import Random
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streams.agents.usage import new_engine
from streams.clock import DAY_MS
from streams.context import WorkerContext
from streams.partitioning import partition_for
from streams.schemas.numbers import encode_json
from streams.settings import load_settings
from streams.sources import Source
from streams.topics import Topics
from streams.usage.engine import ReferenceEngine
from streams.usage.engine.uids import MemoryUids, UidMemory, memory_uids
from streams.usage.engine.uids_rocksdb import MB, RocksUids, RocksUidStore, UidStoreInUse
from streams.usage.metering import Message
from tests.unit.test_usage_engine_recovery import (
    LIMITS,
    RETENTION_DAYS,
    answers,
    batches,
    messages,
    outcome,
)
from tests.unit.usage_engine_factories import CATALOG, NOW, PARTITIONS, TOPIC, Log, m, message

partitions = st.integers(0, PARTITIONS - 1)
operations = st.lists(
    st.one_of(
        batches,
        batches,
        batches,
        st.tuples(st.just("snapshot"), partitions, st.booleans()),  # written or cut short
        st.tuples(st.just("expire")),
        st.tuples(st.just("revoke"), partitions),  # then assigned again: read from the log
        st.tuples(st.just("reread")),  # a rebalance that kept every partition
    ),
    min_size=6,
    max_size=20,
)


@contextmanager
def rocksdb_stores() -> Iterator[Any]:
    """Makes `RocksUidStore`s in a temporary directory, each in its own; closes them."""
    opened: list[RocksUidStore] = []
    with tempfile.TemporaryDirectory() as directory:

        def store() -> RocksUidStore:
            path = Path(directory) / str(len(opened))
            opened.append(RocksUidStore(path, write_buffer_mb=4, block_cache_mb=8))
            return opened[-1]

        try:
            yield store
        finally:
            for each in opened:
                each.close()


def engine_with(uids: Any) -> ReferenceEngine:
    return ReferenceEngine(
        PARTITIONS, CATALOG, retention_days=RETENTION_DAYS, limits=LIMITS, uids=uids
    )


def remembered(engine: ReferenceEngine) -> dict[int, dict[tuple[int, str], list[int]]]:
    """Every partition's uids, per account-hour."""
    out = {}
    for partition, state in engine._states.items():
        uids = state.uids
        out[partition] = {
            (slot, account): sorted(uids.hashes(account, slot))
            for slot in uids.slots()
            for account in uids.accounts(slot)
        }
        assert all(
            uids.count(account, slot) == len(hashes)
            for (slot, account), hashes in out[partition].items()
        )
    return out


def same(engines: tuple[ReferenceEngine, ReferenceEngine], step: Any, *args: Any) -> Any:
    """What `step(engine, *args)` returns, the same for both engines."""
    memory, rocksdb = (step(engine, *args) for engine in engines)
    assert rocksdb == memory
    return memory


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations, st.lists(batches, min_size=1, max_size=2))
def test_the_rocksdb_uid_memory_gives_the_same_outputs_and_answers_as_the_memory_one(
    steps: list[Any], last: list[Any]
) -> None:
    log = Log()
    now, offset = NOW, 0
    with rocksdb_stores() as store:
        engines = engine_with(memory_uids), engine_with(store())
        for step in steps:
            if step[0] == "batch":
                now += step[1] * DAY_MS
                batch = messages(step[2], now, offset)
                offset += len(batch)
                deltas = same(engines, outcome, batch, now)[0]
                log.records.extend((delta[4], delta[5]) for delta in deltas)
            elif step[0] == "snapshot":
                _, partition, written = step
                round_ = same(engines, ReferenceEngine.snapshot, partition)
                if not written:  # the worker died before the marker: the round failed
                    log.records.extend((record.key, record.value) for record in round_.records)
                else:
                    log.write_round(round_)
                    for engine in engines:
                        engine.confirm_snapshot(round_)
                    log.tombstone(round_.obsolete)
            elif step[0] == "expire":
                log.write(same(engines, ReferenceEngine.expire))
            elif step[0] == "revoke":
                for engine in engines:
                    engine.revoke(step[1])
                    log.recover(engine, compacted=False)
            else:
                for engine in engines:
                    log.recover(engine)
            same(engines, remembered)
            same(engines, answers)

        # replicas rebuilt from the log: segments replaced and removed, deltas applied
        replicas = log.recover(engine_with(memory_uids)), log.recover(engine_with(store()))
        same(replicas, remembered)
        for spec in last:
            now += spec[1] * DAY_MS
            batch = messages(spec[2], now, offset)
            offset += len(batch)
            going_on = same(engines, outcome, batch, now)
            assert same(replicas, outcome, batch, now) == going_on
        same(replicas, answers)


def test_a_revoked_partition_assigned_again_forgets_its_rocksdb_uids() -> None:
    with rocksdb_stores() as store:
        engine = engine_with(store())
        first = engine.process([message(0, m("u1"), m("u2"))], NOW)
        assert first.stats.accepted == 2
        engine.revoke(first.deltas[0].partition)
        again = engine.process([message(1, m("u3"), m("u1"))], NOW)
        assert (again.stats.accepted, again.stats.duplicates) == (2, 0)


# few account-hours, so that operations meet on the same ones; accounts that are
# prefixes of each other, and slots either side of zero
accounts = st.sampled_from(["acme", "acm"])
slots = st.integers(-1, 0)
two = st.integers(0, 1)
uid_lists = st.lists(st.sampled_from([0, 1, 2, 3, 2**63, 2**64 - 1]), max_size=4)
uid_operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), two, accounts, slots, uid_lists),
        st.tuples(st.just("merge"), two, accounts, slots, uid_lists),
        st.tuples(st.just("forget"), two, accounts, slots, uid_lists),
        st.tuples(st.just("drop"), two, accounts, slots),
        st.tuples(st.just("clear"), two),
    ),
    max_size=30,
)


def contents(memories: list[UidMemory]) -> list[Any]:
    return [
        {
            (slot, account): (uids.count(account, slot), sorted(uids.hashes(account, slot)))
            for slot in uids.slots()
            for account in uids.accounts(slot)
        }
        for uids in memories
    ]


def apply_uid_operation(memories: list[UidMemory], operation: Any) -> list[int]:
    """Apply one operation to a partition's memory; what `check` said for its uids."""
    name, partition, *where = operation
    uids = memories[partition]
    if name == "clear":
        uids.clear()
        return []
    if name == "drop":
        uids.drop(*where)
        return []
    account, slot, hashes = where
    checked = [uids.check(account, slot, uid) for uid in hashes]
    if name == "add":
        for uid in hashes:
            if uids.check(account, slot, uid) >= 0:
                uids.add(account, slot, uid)
    elif name == "merge":
        uids.merge(account, slot, hashes)
    else:
        uids.forget(account, slot, hashes)
    return checked


@settings(max_examples=300, deadline=None)
@given(uid_operations)
# forgotten account-hours and partitions remembered again, and known uids merged again
@example([("merge", 0, "acme", 0, [1]), ("drop", 0, "acme", 0), ("merge", 0, "acme", 0, [2])])
@example([("merge", 1, "acm", 0, [1]), ("clear", 1), ("add", 1, "acm", 0, [2])])
@example([("add", 0, "acme", -1, [1]), ("merge", 0, "acme", -1, [1, 2])])
def test_the_rocksdb_uid_memory_remembers_counts_and_forgets_like_the_memory_one(
    operations: list[Any],
) -> None:
    with rocksdb_stores() as store:
        rocksdb_store = store()
        memory = [memory_uids(partition) for partition in range(PARTITIONS)]
        rocksdb = [rocksdb_store(partition) for partition in range(PARTITIONS)]
        for operation in operations:
            checked = apply_uid_operation(memory, operation)
            assert apply_uid_operation(rocksdb, operation) == checked
            assert contents(rocksdb) == contents(memory)


def test_opening_the_rocksdb_uid_memory_wipes_what_a_previous_run_left(
    tmp_path: Path,
) -> None:
    path = tmp_path / "usage-uids"
    before = RocksUidStore(path, write_buffer_mb=4, block_cache_mb=8)
    engine = engine_with(before)
    assert engine.process([message(0, m("u1"))], NOW).stats.accepted == 1
    before.close()
    after = RocksUidStore(path, write_buffer_mb=4, block_cache_mb=8)
    try:
        # the usage log, not the directory, is the truth: recovery rebuilds the uids
        assert engine_with(after).process([message(0, m("u1"))], NOW).stats.accepted == 1
    finally:
        after.close()


def test_a_second_worker_on_the_same_data_dir_is_refused_naming_the_uid_memory_in_use(
    tmp_path: Path,
) -> None:
    path = tmp_path / "usage-uids"
    first = RocksUidStore(path, write_buffer_mb=4, block_cache_mb=8)
    try:
        with pytest.raises(UidStoreInUse, match=r"uid memory .*usage-uids is in use .*lock"):
            RocksUidStore(path, write_buffer_mb=4, block_cache_mb=8)
    finally:
        first.close()


@pytest.mark.parametrize(("store", "memory"), [("memory", MemoryUids), ("rocksdb", RocksUids)])
def test_the_worker_keeps_its_uid_memory_where_the_store_setting_says(
    tmp_path: Path, store: str, memory: type
) -> None:
    # the Python engine either way (the native one keeps its uids in its own memory)
    settings = load_settings(store=store, data_dir=tmp_path, engine="python")
    engine, name = new_engine(
        WorkerContext(settings=settings, topics=Topics.from_settings(settings))
    )
    assert isinstance(engine, ReferenceEngine) and name.startswith("python")
    engine.set_catalog(CATALOG)
    partition = partition_for("acme", settings.partitions)
    batch = [Message(b"acme", encode_json(m("u1")), Source(TOPIC, partition, 0))] * 2
    processed = engine.process(batch, NOW)
    assert (processed.stats.accepted, processed.stats.duplicates) == (1, 1)
    assert isinstance(engine._states[partition].uids, memory)
    assert (tmp_path / "usage-uids" / "CURRENT").exists() == (store == "rocksdb")


UIDS = 1_000_000
PER_ACCOUNT_HOUR = 1000
HEAP_BOUND = 8 * 1024 * 1024  # bytes: counts of 1,000 account-hours and some slack


def traced_bytes_holding(uids: UidMemory, count: int) -> int:
    """The Python heap's growth (tracemalloc) while `uids` takes `count` uid hashes, in
    account-hours of PER_ACCOUNT_HOUR uids, as the engine merges them."""
    random = Random(7)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for segment in range(count // PER_ACCOUNT_HOUR):
            hashes = [random.getrandbits(64) for _ in range(PER_ACCOUNT_HOUR)]
            uids.merge(f"account-{segment % 100}", segment // 100, hashes)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_the_rocksdb_uid_memory_holds_a_million_uids_without_growing_the_python_heap() -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = RocksUidStore(Path(directory), write_buffer_mb=4, block_cache_mb=8)
        try:
            rocksdb = store(0)
            held_in_rocksdb = traced_bytes_holding(rocksdb, UIDS)
            slots = rocksdb.slots()
            assert (
                sum(len(rocksdb.hashes(a, s)) for s in slots for a in rocksdb.accounts(s)) == UIDS
            )
            # outside the heap, RocksDB keeps to the budgets it was given
            memtables = store.db.property_int_value("rocksdb.size-all-mem-tables")
            cached = store.db.property_int_value("rocksdb.block-cache-usage")
            capacity = store.db.property_int_value("rocksdb.block-cache-capacity")
        finally:
            store.close()
    held_in_memory = traced_bytes_holding(MemoryUids(), UIDS)
    print(f"{UIDS:,} uids: traced heap rocksdb {held_in_rocksdb:,} B, dicts "
          f"{held_in_memory:,} B; memtables {memtables:,} B, block cache {cached:,} B")  # fmt: skip
    assert held_in_rocksdb < HEAP_BOUND
    assert held_in_memory > 4 * HEAP_BOUND  # the same uids in dicts: the heap grows
    assert memtables is not None and memtables <= 4 * MB
    assert cached is not None and capacity == 8 * MB and cached <= capacity
