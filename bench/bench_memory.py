"""Worker peak memory (VmHWM) holding 100,000 accounts x 3 aggregations x 24 hours of usage.

    .venv/bin/python -m bench.bench_memory [--accounts 100000] [--hours 24] [--timeout 300]

A fresh deployment whose catalog is the example catalog cut down to three aggregations
of the `api` meter (api_calls SUM, data_transfer SUM of a derived field, active_users
UNIQUE). The measurements topic is pre-filled with one measurement per account and hour
of yesterday (UTC), so every account has usage in each of the 24 hours: 2,400,000
measurements, each account's consecutive (envelopes of 100 carry ~4 accounts; this is
the order that writes each usage record least often, so the worker gets there
soonest; the state it ends with does not depend on the order). One worker process
drains it; VmHWM and VmRSS come from /proc/<pid>/status, sampled while it runs and once
its committed offsets reach the end offsets.

Bounded: if the worker has not caught up after `--timeout` s, or its resident set
passes `--max-rss-gib` (a shared machine; past 3x the target the verdict is clear), the
figures are those of the part it did, with a linear extrapolation to all, marked partial.

What a record costs is measured beside it, from the last records on the usage
changelog: its length, its decoded size, and what an `orjson.dumps` of it retains
(orjson >= 3.12 does not shrink the buffer of the bytes it returns).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench.bench_worker import yesterday_ms
from bench.common import (
    HOUR_MS,
    Broker,
    Deployment,
    api_measurement,
    catalog_with_aggregations,
    envelopes,
    iso,
    kafka,
    memory_kib,
    produce_envelopes,
)

AGGREGATIONS = {"api_calls", "data_transfer", "active_users"}
GIB = 1024 * 1024


def measurements(accounts: int, hours: int, run: str) -> Iterator[tuple[str, bytes]]:
    """One `api` measurement per account and hour of yesterday, account by account."""
    day = yesterday_ms()
    for a in range(accounts):
        account = f"acct-{a:06d}"
        for hour in range(hours):
            ts = iso(day + hour * HOUR_MS + (a * 7919) % HOUR_MS)
            uid = f"{run}-{a}-{hour}"
            yield account, api_measurement(uid, account, ts, f"user-{hour % 5}", 3, 250_000, 20)


def run(
    broker: Broker,
    *,
    accounts: int = 100_000,
    hours: int = 24,
    timeout: float = 300.0,
    max_rss_gib: float = 3.0,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        deployment = Deployment(
            broker.bootstrap, Path(tmp), catalog=catalog_with_aggregations(AGGREGATIONS)
        )
        try:
            return _run(deployment, accounts, hours, timeout, max_rss_gib)
        finally:
            deployment.close()


def _run(
    deployment: Deployment, accounts: int, hours: int, timeout: float, max_rss_gib: float
) -> dict[str, Any]:
    topic = deployment.topics.measurements
    count = accounts * hours
    items = envelopes(
        measurements(accounts, hours, deployment.app_id), deployment.topics.partitions, 100
    )
    produce_envelopes(deployment.bootstrap, topic, items)
    del items
    ends = deployment.end_offsets(topic)

    worker = deployment.worker().start()
    samples: list[tuple[float, int, int]] = []  # (s since ready, processed, VmRSS KiB)
    try:
        deployment.wait_worker_ready(worker)
        ready_at = time.monotonic()
        idle = memory_kib(worker.pid)
        deadline = ready_at + timeout
        processed = 0
        caught_up = False
        stopped = ""
        while time.monotonic() < deadline:
            if not worker.alive():
                raise RuntimeError(f"the worker exited:\n{worker.log_tail()}")
            health = deployment.worker_health() or {}
            stats = health.get("stats", {})
            processed = int(stats.get("measurements_accepted", 0)) or processed
            rss = memory_kib(worker.pid)["VmRSS"]
            samples.append((round(time.monotonic() - ready_at, 1), processed, rss))
            if processed >= count and deployment.caught_up(topic, ends):
                caught_up = True
                break
            if rss > max_rss_gib * GIB:
                stopped = f"VmRSS passed {max_rss_gib:g} GiB"
                break
            time.sleep(0.5)
        else:
            stopped = f"not caught up within {timeout:.0f} s"
        elapsed = time.monotonic() - ready_at
        final = memory_kib(worker.pid)
        stats = (deployment.worker_health() or {}).get("stats", {})
    finally:
        worker.stop()

    share = processed / count
    records, sizes = 0, {}
    # The usage changelog and its record class as the worker has them now; a worker that
    # keeps usage another way has neither, and the figures above stand on their own.
    with contextlib.suppress(Exception):
        records = sum(deployment.end_offsets(f"{deployment.app_id}-usage-changelog"))
        sizes = record_sizes(deployment, 300)
    result: dict[str, Any] = {
        "accounts": accounts,
        "hours": hours,
        "aggregations": sorted(AGGREGATIONS),
        "measurements": count,
        "processed": processed,
        "caught_up": caught_up,
        "seconds": elapsed,
        "idle_vm_rss_mib": idle["VmRSS"] / 1024,
        "vm_hwm_mib": final["VmHWM"] / 1024,
        "vm_rss_mib": final["VmRSS"] / 1024,
        "vm_hwm_gib": final["VmHWM"] / GIB,
        # one measurement per account-hour: what the state grew by, per account-hour held
        "bytes_per_account_hour": (final["VmHWM"] - idle["VmRSS"]) * 1024 / max(processed, 1),
        "rejected": stats.get("measurements_rejected", 0),
        "changelog_records": records,
        **sizes,
        "samples": samples[:: max(1, len(samples) // 40)],
    }
    if not caught_up:
        # State grows with the accounts done (each account's hours arrive together).
        grown = final["VmHWM"] - idle["VmRSS"]
        result["extrapolated_vm_hwm_gib"] = (idle["VmRSS"] + grown / max(share, 1e-9)) / GIB
        result["warning"] = (
            f"{stopped}: {processed:,} of {count:,} measurements "
            f"({share:.0%}); the peak is for that share (linear extrapolation to all: "
            f"{result['extrapolated_vm_hwm_gib']:.2f} GiB)"
        )
    return result


def record_sizes(deployment: Deployment, per_partition: int) -> dict[str, float]:
    """What one usage record costs, from the last records on the usage changelog.

    Stored: the bytes the worker's table keeps per record. Decoded: the Python heap one
    `from_bytes` of the record class takes (tracemalloc in this process), what each entry of the
    worker's decoded-record cache (`Metering`'s `RecordCache`) holds.
    """
    from streams.usage import store as usage_store

    record_class = usage_store.UsageRecord

    topic = f"{deployment.app_id}-usage-changelog"
    consumer = Consumer({"bootstrap.servers": deployment.bootstrap, "group.id": "bench-sizes"})
    values: list[bytes] = []
    try:
        for partition in range(deployment.topics.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            start = max(low, high - per_partition)
            if high <= start:
                continue
            consumer.assign([TopicPartition(topic, partition, start)])
            while len(values) < (partition + 1) * per_partition:
                batch = consumer.consume(num_messages=high - start, timeout=5)
                if not batch:
                    break
                values.extend(value for m in batch if m.error() is None and (value := m.value()))
    finally:
        consumer.close()
    if not values:
        return {}
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    decoded = [record_class.from_bytes(value) for value in values]
    after = tracemalloc.get_traced_memory()[0]
    # What the worker's table holds per value: the bytes orjson.dumps returned.
    dumped = [record.to_bytes() for record in decoded]
    retained = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del decoded, dumped
    return {
        "record_stored_bytes": sum(len(v) for v in values) / len(values),
        "record_decoded_bytes": (after - before) / len(values),
        "record_retained_bytes": (retained - after) / len(values),
    }


def describe(r: dict[str, Any]) -> str:
    lines = [
        f"worker memory: {r['accounts']:,} accounts x {len(r['aggregations'])} aggregations x "
        f"{r['hours']} hours ({r['measurements']:,} measurements, {r['processed']:,} folded "
        f"in {r['seconds']:.0f} s)",
        f"  VmHWM {r['vm_hwm_mib']:,.0f} MiB ({r['vm_hwm_gib']:.2f} GiB), VmRSS at the end "
        f"{r['vm_rss_mib']:,.0f} MiB, idle (ready) {r['idle_vm_rss_mib']:,.0f} MiB; "
        f"{r['bytes_per_account_hour']:,.0f} B per account-hour (VmHWM - idle)",
    ]
    if "record_stored_bytes" in r:
        lines.append(
            f"  {r['changelog_records']:,} record writes on the usage changelog; a usage "
            f"record is {r['record_stored_bytes']:,.0f} B long, held in "
            f"{r['record_retained_bytes']:,.0f} B (orjson buffer), "
            f"{r['record_decoded_bytes']:,.0f} B decoded (Python heap)"
        )
    if "warning" in r:
        lines.append(f"  WARNING: {r['warning']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--max-rss-gib", type=float, default=3.0)
    args = parser.parse_args()
    with kafka() as broker:
        result = run(
            broker,
            accounts=args.accounts,
            hours=args.hours,
            timeout=args.timeout,
            max_rss_gib=args.max_rss_gib,
        )
    print(describe(result))


if __name__ == "__main__":
    main()
