"""The usage engine in process, no Kafka: µs per measurement of `process` and bytes of state.

The worker benchmark's workload (`bench_worker.measurements`: the example catalog, 90 %
`api` measurements with SUM, UNIQUE, MEAN and COUNT aggregations and a derived field, 10 %
`storage` with MAX, LATEST and MIN; 10,000 accounts taking turns, ts over yesterday),
in envelopes of 100 per partition, processed in batches of 500 messages (the usage
agent's default) by:

- `ReferenceEngine.process` (deltas encoded, state merged), with the garbage collector
  paused during a batch (the default) and not, and
- today's `Metering.process` with an in-memory dict as the usage table, for the ratio;
- `NativeEngine.process` (the Rust engine, when it is built), whose state lives outside
  Python's allocator: its bytes per account-hour are the growth of the process's resident
  memory over a run, measured first, before anything else was allocated and freed.

`--uids rocksdb` keeps the engine's de-duplication memory in a local RocksDB (as
`METERLINE_STORE=rocksdb` does; a fresh one in a temporary directory per run) instead
of Python dicts; the state bytes then count the Python heap only.

Times are CPU time (process_time) of the whole run divided by the measurements, best of
`--repeat`. State: tracemalloc's traced bytes after a run (a separate one: tracing is
slow) divided by the account-hours that have usage; beside it what today's records take as
bytes (`UsageRecord.to_bytes`), the size of the same state on the wire.

    .venv/bin/python -m bench.bench_engine [--measurements 1000000] [--repeat 3]
        [--uids memory|rocksdb]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.bench_worker import messages
from bench.common import PARTITIONS, example_catalog, now_ms
from streams.schemas.catalog import Catalog
from streams.sources import Source
from streams.usage.engine import ReferenceEngine, UsageEngine
from streams.usage.engine.uids import UidFactory, memory_uids
from streams.usage.metering import Message, Metering

BATCH_MESSAGES = 500


def batches(count: int, accounts: int) -> list[list[Message]]:
    envelopes = messages(count, accounts, 100, PARTITIONS, "bench")
    items = [
        Message(e.key, e.value, Source("measurements", e.partition, offset))
        for offset, e in enumerate(envelopes)
    ]
    return [items[i : i + BATCH_MESSAGES] for i in range(0, len(items), BATCH_MESSAGES)]


def rocksdb_uids(directory: Path) -> UidFactory:
    """A fresh RocksDB uid memory with the settings' default budgets."""
    from streams.usage.engine.uids_rocksdb import RocksUidStore  # rocksdict: an extra

    return RocksUidStore(directory / str(len(list(directory.iterdir()))), 64, 64)


def run_engine(
    catalog: Catalog,
    work: list[list[Message]],
    now: int,
    pause_gc: bool = True,
    uids: UidFactory = memory_uids,
) -> ReferenceEngine:
    engine = ReferenceEngine(PARTITIONS, catalog, pause_gc=pause_gc, uids=uids)
    for batch in work:
        engine.process(batch, now)
    return engine


def run_native(catalog: Catalog, work: list[list[Message]], now: int) -> UsageEngine | None:
    try:
        from streams.usage.engine.native import NativeEngine
    except ImportError:
        return None
    engine = NativeEngine(PARTITIONS, catalog)
    for batch in work:
        engine.process(batch, now)
    return engine


def resident_bytes() -> int:
    """The process's resident memory (Linux), for state that tracemalloc cannot see."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_metering(catalog: Catalog, work: list[list[Message]], now: int) -> dict[str, bytes]:
    metering, store = Metering(), dict[str, bytes]()
    for batch in work:
        store.update(metering.process(batch, catalog, now, store.get).writes)
    return store


def cpu(body: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        started = time.process_time()
        body()
        best = min(best, time.process_time() - started)
    return best


def account_hours(engine: ReferenceEngine) -> int:
    return sum(
        len({start // 3_600_000 for start in usage.starts})
        for state in engine._states.values()
        for usage in state.accounts.values()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measurements", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uids", choices=["memory", "rocksdb"], default="memory")
    args = parser.parse_args()
    directory = tempfile.TemporaryDirectory()  # removed at exit

    def uids() -> UidFactory:
        return rocksdb_uids(Path(directory.name)) if args.uids == "rocksdb" else memory_uids

    catalog = Catalog.from_documents(example_catalog())
    work = batches(args.measurements, args.accounts)
    now = now_ms()
    count = args.measurements

    gc.collect()
    before = resident_bytes()
    native = run_native(catalog, work, now)
    native_bytes = resident_bytes() - before
    native_hours = 0 if native is None else getattr(native, "account_hours")()  # noqa: B009
    del native
    native_s = cpu(lambda: run_native(catalog, work, now), args.repeat)

    engine_s = cpu(lambda: run_engine(catalog, work, now, uids=uids()), args.repeat)
    collecting_s = cpu(
        lambda: run_engine(catalog, work, now, pause_gc=False, uids=uids()), args.repeat
    )
    metering_s = cpu(lambda: run_metering(catalog, work, now), args.repeat)

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    engine = run_engine(catalog, work, now, uids=uids())
    gc.collect()
    state_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    hours = account_hours(engine)
    store = run_metering(catalog, work, now)

    print(f"{count:,} measurements, {args.accounts:,} accounts, envelopes of 100, ")
    print(f"batches of {BATCH_MESSAGES} messages, best of {args.repeat} (CPU time), "
          f"uids in {args.uids}")  # fmt: skip
    print(f"  engine.process     {engine_s / count * 1e6:6.2f} µs/measurement")
    print(f"    gc not paused    {collecting_s / count * 1e6:6.2f} µs/measurement")
    print(f"  Metering.process   {metering_s / count * 1e6:6.2f} µs/measurement (today)")
    if native_hours:
        print(f"  native.process     {native_s / count * 1e6:6.2f} µs/measurement (Rust)")
    else:
        print("  native.process     not built (make install with cargo on PATH)")
    print(f"  engine state       {state_bytes / hours:8,.0f} bytes/account-hour (tracemalloc, "
          f"{hours:,} account-hours)")  # fmt: skip
    if native_hours:
        print(f"  native state       {native_bytes / native_hours:8,.0f} bytes/account-hour "
              f"(resident memory, {native_hours:,} account-hours)")  # fmt: skip
    record_bytes = sum(len(value) for value in store.values()) / max(len(store), 1)
    print(f"  today's records    {record_bytes:8,.0f} bytes/account-hour (serialized)")


if __name__ == "__main__":
    main()
