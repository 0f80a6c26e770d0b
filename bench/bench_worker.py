"""Worker throughput: measurements/s from the `measurements` topic to committed usage state.

    .venv/bin/python -m bench.bench_worker [--measurements 300000] [--batch 100]
        [--accounts 10000] [--grouped | --realistic] [--profile] [--timeout 150]
        [--env NAME=VALUE]
    .venv/bin/python -m bench.bench_worker --raw [--measurements 1000000]

One run: a fresh deployment (topics under a unique prefix, the example catalog); the
measurements topic is pre-filled with `--measurements` measurements of `--accounts`
accounts (every aggregation type: the `api` meter's SUM, UNIQUE, MEAN, COUNT and a
derived field, one in ten a `storage` measurement for MAX, LATEST, MIN; timestamps
spread over yesterday, UTC), in envelopes of `--batch` measurements grouped by partition
(`--batch 1`: single-measurement messages). That is the pessimistic workload; with
`--realistic` the ts are within the last minute (usage as it happens) and 10 hot accounts
send half of the measurements. Then, on the same topic:

1. raw Kafka: the pre-fill's produce rate (project producer settings: acks=all,
   idempotent, lz4) and confluent-kafka `consume(num_messages=10000)` of the whole
   topic, twice (no decoding);
2. one worker process (`python -m connectors.cli worker`); the clock starts when its
   health says ready (catalog loaded, partitions assigned) and stops when its consumer
   group's committed offsets reach the end offsets (faust flushes the table changelog
   before it commits: committed offsets = committed usage state). The rate counts only
   what was left to do at ready (`measurements_accepted` at that moment is subtracted).

While the worker runs, the group's committed position and the topic's end offset are
sampled every second with the admin client (`CommitTrail`): a sparkline, a small table
and the longest gap between commit advances (commits must keep advancing under load).

Bounded: past `--timeout` s the rate is over the part done, marked partial. The usage
changelog's message count and the size of its last records show what the worker wrote.
`--profile` samples the worker with py-spy during the timed part (a separate run in
`bench.run`, so the profiler's CPU does not count against the figure). `--raw` measures
raw Kafka alone on a fresh topic (larger, so fixed costs do not dominate).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from bench.common import (
    DAY_MS,
    PARTITIONS,
    RESULTS,
    Broker,
    CommitTrail,
    Deployment,
    Profile,
    api_measurement,
    consume_all,
    cpu_seconds,
    envelopes,
    iso,
    kafka,
    memory_kib,
    now_ms,
    produce_envelopes,
    storage_measurement,
)
from connectors.kafka.admin import create_topics
from connectors.kafka.measurements import Envelope
from streams.partitioning import partition_for
from streams.topics import MEASUREMENTS, Topics

# Inclusive shares of the worker's samples, by frame (substring of py-spy's frame names).
PROFILE_MARKS = (
    "Engine::process",  # the native engine: decode, validate, de-duplicate, fold, deltas
    "NativeEngine._fold (streams/usage/engine/native.py",  # ... with its Python wrapper
    "ReferenceEngine.process (streams/usage/engine/reference.py",  # the Python engine
    "aiokafka/producer",  # producing through faust (rejections, forwards)
    "BulkProducer",  # producing the usage log's deltas through librdkafka
    "compress",  # lz4 of batches aiokafka produces
    "aiokafka/consumer",  # fetching
    "faust/web",  # health and usage reads
    "EpollSelector.select",  # idle: waiting for I/O
)


def yesterday_ms() -> int:
    today = now_ms() // DAY_MS * DAY_MS
    return today - DAY_MS


HOT_ACCOUNTS = 10  # realistic workload: these take half of all measurements
RECENT_MS = 60_000  # realistic workload: ts within the last minute


def measurements(
    count: int, accounts: int, run: str, grouped: bool = False, realistic: bool = False
) -> Iterator[tuple[str, bytes]]:
    """(account, encoded measurement).

    Pessimistic (default): ts spread over yesterday, so every account has usage in up to
    24 hours. Interleaved (default): accounts take turns, as in a stream from many
    customers, so an envelope of 100 carries 100 accounts. Grouped: each account's
    measurements are consecutive, so an envelope carries one account (the locality
    bench_fold assumes). Realistic: ts within the last minute (usage of now), half of
    the measurements from `HOT_ACCOUNTS` accounts, the rest interleaved over `accounts`.
    """
    day = yesterday_ms()
    now = now_ms()
    step = DAY_MS // max(count, 1)
    per_account = -(-count // accounts)
    for i in range(count):
        if realistic:
            hot = i % 2 == 0
            account = f"acct-{(i // 2) % HOT_ACCOUNTS if hot else (i // 2) % accounts:06d}"
            ts = iso(now - (i * 7919) % RECENT_MS)
        elif grouped:
            account = f"acct-{i // per_account:06d}"
            ts = iso(day + (i % per_account) * (DAY_MS // per_account))
        else:
            account = f"acct-{i % accounts:06d}"
            ts = iso(day + i * step)
        if i % 10 == 9:
            encoded = storage_measurement(f"{run}-{i}", account, ts, "b1", 1.5 + i % 100)
        else:
            user = f"user-{i % 23}"
            encoded = api_measurement(f"{run}-{i}", account, ts, user, 1 + i % 5, 10_000 + i, 20)
        yield account, encoded


def messages(
    count: int,
    accounts: int,
    batch: int,
    partitions: int,
    run: str,
    grouped: bool = False,
    realistic: bool = False,
) -> list[Envelope]:
    items = measurements(count, accounts, run, grouped, realistic)
    if batch > 1:
        return envelopes(items, partitions, batch)
    return [  # single-measurement messages, keyed by account (any third-party producer)
        Envelope(partition_for(account, partitions), account.encode(), encoded, 1)
        for account, encoded in items
    ]


def run_raw(
    broker: Broker, *, count: int = 1_000_000, batch: int = 100, accounts: int = 10_000
) -> dict[str, Any]:
    """Raw Kafka only: the same payload produced to a fresh topic, then consumed twice."""
    token = uuid.uuid4().hex[:8]
    topic = Topics(prefix=f"benchraw{token}.", partitions=PARTITIONS).resolve(MEASUREMENTS)
    create_topics(broker.bootstrap, [topic])
    items = messages(count, accounts, batch, PARTITIONS, token)
    produce_s = produce_envelopes(broker.bootstrap, topic.name, items)
    total = len(items)
    del items
    consume_s = []
    for _ in range(2):
        seen, elapsed = consume_all(broker.bootstrap, topic.name, PARTITIONS)
        assert seen == total, (seen, total)
        consume_s.append(elapsed)
    return {
        "measurements": count,
        "batch": batch,
        "messages": total,
        "partitions": PARTITIONS,
        "produce_messages_per_s": total / produce_s,
        "produce_measurements_per_s": count / produce_s,
        "consume_s": consume_s,
        "consume_messages_per_s": total / min(consume_s),
        "consume_measurements_per_s": count / min(consume_s),
    }


def run(
    broker: Broker,
    *,
    count: int = 300_000,
    batch: int = 100,
    accounts: int = 10_000,
    grouped: bool = False,
    realistic: bool = False,
    profile: bool = False,
    timeout: float = 150.0,
    label: str = "worker",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One pre-filled topic, its raw produce/consume rates, and one worker draining it.

    `env`: settings of the worker (e.g. METERLINE_USAGE_BATCH_WITHIN_S) for experiments.
    """
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        deployment = Deployment(broker.bootstrap, Path(tmp), env=env)
        try:
            shape = Shape(count, batch, accounts, grouped, realistic)
            return _run(deployment, broker, shape, profile, timeout, label)
        finally:
            deployment.close()


@dataclass(frozen=True)
class Shape:
    """What one run pre-fills (see `measurements`)."""

    count: int
    batch: int
    accounts: int
    grouped: bool = False
    realistic: bool = False


def _run(
    deployment: Deployment,
    broker: Broker,
    shape: Shape,
    profile: bool,
    timeout: float,
    label: str,
) -> dict[str, Any]:
    count, batch, accounts = shape.count, shape.batch, shape.accounts
    topic = deployment.topics.measurements
    partitions = deployment.topics.partitions
    items = messages(
        count, accounts, batch, partitions, deployment.app_id, shape.grouped, shape.realistic
    )
    produce_s = produce_envelopes(deployment.bootstrap, topic, items)
    ends = deployment.end_offsets(topic)
    total_messages = sum(ends)
    assert total_messages == len(items), (total_messages, len(items))
    payload_bytes = sum(len(item.value) for item in items)
    del items
    consume_s = []
    for _ in range(2):
        seen, elapsed = consume_all(deployment.bootstrap, topic, partitions)
        assert seen == total_messages
        consume_s.append(elapsed)

    sampler = Profile(RESULTS / f"profile-{label}.json", native=True) if profile else None
    worker = deployment.worker(wrap=sampler.wrap() if sampler else None).start()
    trail: CommitTrail | None = None
    try:
        health = deployment.wait_worker_ready(worker)
        ready_at = time.monotonic()
        startup_s = ready_at - worker.started_at
        done_at_ready = _processed(health)
        cpu_ready = cpu_seconds(worker.pid)
        broker_cpu_ready = cpu_seconds(broker.pid) if broker.pid else None
        if sampler is not None:
            sampler.attach(worker.pid)
        trail = CommitTrail(deployment.bootstrap, deployment.app_id, topic, partitions).start()

        folded_at: float | None = None
        caught_up = False
        processed = done_at_ready
        progress: list[tuple[float, int]] = []
        deadline = ready_at + timeout
        # Bounded: past the deadline the figure is what was done so far (marked partial).
        while time.monotonic() < deadline:
            if not worker.alive():
                raise RuntimeError(f"the worker exited:\n{worker.log_tail()}")
            processed = _processed(deployment.worker_health() or {}) or processed
            progress.append((round(time.monotonic() - ready_at, 2), processed))
            if folded_at is None and processed >= count:
                folded_at = time.monotonic()
            if processed >= count and deployment.caught_up(topic, ends):
                caught_up = True
                break
            time.sleep(0.2)
        committed_at = time.monotonic()
        trail.stop()
        worker_cpu = cpu_seconds(worker.pid) - cpu_ready
        broker_cpu = (
            cpu_seconds(broker.pid) - broker_cpu_ready
            if broker.pid and broker_cpu_ready is not None
            else None
        )
        final = deployment.worker_health() or {}
        memory = memory_kib(worker.pid)
        if sampler is not None:
            sampler.stop()
    finally:
        if trail is not None:
            trail.stop()
        if sampler is not None and sampler.running:
            sampler.stop()
        worker.stop()
        if sampler is not None:
            sampler.finish()

    # What the worker wrote for it: one usage changelog message per (account, day)
    # record per batch in which that record changed, each the whole record.
    changelog = f"{deployment.app_id}-usage-changelog"
    writes, last_sizes = 0, []
    with contextlib.suppress(KafkaException):  # a worker that keeps usage another way
        writes = sum(deployment.end_offsets(changelog))
        last_sizes = tail_sizes(deployment.bootstrap, changelog, partitions, 500)
    stats = final.get("stats", {})
    todo = (count if caught_up else processed) - done_at_ready
    elapsed = committed_at - ready_at
    fold_elapsed = (folded_at or committed_at) - ready_at
    raw_consume = total_messages / min(consume_s)
    result: dict[str, Any] = {
        "label": label,
        "measurements": count,
        "batch": batch,
        "accounts": accounts,
        "messages": total_messages,
        "partitions": partitions,
        "payload_mb": round(payload_bytes / 1e6, 1),
        "raw_produce_messages_per_s": total_messages / produce_s,
        "raw_produce_measurements_per_s": count / produce_s,
        "raw_consume_s": consume_s,
        "raw_consume_messages_per_s": raw_consume,
        "raw_consume_measurements_per_s": raw_consume * batch,
        "worker_startup_s": startup_s,
        "processed_before_ready": done_at_ready,
        "timed_s": elapsed,
        "measurements_per_s": todo / elapsed,
        "messages_per_s": todo / batch / elapsed,
        "folded_measurements_per_s": todo / fold_elapsed,
        "ratio_to_raw_consume": (todo / elapsed) / (raw_consume * batch),
        "worker_cpu_share": worker_cpu / elapsed,
        "measurements_per_worker_cpu_s": todo / worker_cpu if worker_cpu else None,
        "broker_cpu_share": broker_cpu / elapsed if broker_cpu is not None else None,
        "worker_vm_hwm_mib": memory.get("VmHWM", 0) / 1024,
        "order": "grouped" if shape.grouped else "interleaved",
        "workload": "realistic" if shape.realistic else "pessimistic",
        "env": {k: v for k, v in deployment.env.items() if k.startswith("METERLINE_USAGE")},
        "caught_up": caught_up,
        "processed": processed if not caught_up else count,
        "changelog_messages": writes,
        "changelog_writes_per_measurement": writes / max(processed, 1),
        "record_bytes_at_end": sum(last_sizes) / max(len(last_sizes), 1),
        "stats": stats,
        "progress": progress[:: max(1, len(progress) // 40)],
        **trail.summary(),
    }
    if not caught_up:
        result["warning"] = (
            f"not caught up within {timeout:.0f} s: {processed - done_at_ready:,} of "
            f"{count - done_at_ready:,} measurements; the rate is over that part only"
        )
    if stats.get("measurements_rejected"):
        result["warning"] = f"{stats['measurements_rejected']} measurements rejected"
    if sampler is not None:
        result["profile"] = sampler.summary(marks=PROFILE_MARKS)
        result["profile_file"] = str(sampler.path)
    return result


def tail_sizes(bootstrap: str, topic: str, partitions: int, last: int) -> list[int]:
    """Value sizes of the last `last` messages of each partition of `topic`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
    sizes: list[int] = []
    try:
        for partition in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            start = max(low, high - last)
            if high <= start:
                continue
            consumer.assign([TopicPartition(topic, partition, start)])
            position = start
            while position < high:
                batch = consumer.consume(num_messages=min(1000, high - position), timeout=5)
                if not batch:
                    break
                for message in batch:
                    offset = message.offset()
                    if message.error() is None and offset is not None:
                        sizes.append(len(message.value() or b""))
                        position = offset + 1
    finally:
        consumer.close()
    return sizes


def _processed(health: dict[str, Any]) -> int:
    stats = health.get("stats", {})
    return int(
        stats.get("measurements_accepted", 0)
        + stats.get("measurements_duplicate", 0)
        + stats.get("measurements_rejected", 0)
    )


def describe(result: dict[str, Any]) -> str:
    r = result
    lines = [
        f"{r['label']}: {r['measurements']:,} measurements in {r['messages']:,} messages "
        f"(batch {r['batch']}, {r['accounts']:,} accounts {r['order']}, "
        f"{r['partitions']} partitions, {r['payload_mb']} MB)",
        f"  raw produce  {r['raw_produce_messages_per_s']:>12,.0f} msg/s "
        f"{r['raw_produce_measurements_per_s']:>12,.0f} measurements/s",
        f"  raw consume  {r['raw_consume_messages_per_s']:>12,.0f} msg/s "
        f"{r['raw_consume_measurements_per_s']:>12,.0f} measurements/s",
        f"  worker       {r['messages_per_s']:>12,.0f} msg/s "
        f"{r['measurements_per_s']:>12,.0f} measurements/s to committed state "
        f"({r['ratio_to_raw_consume']:.1%} of raw consume); folded "
        f"{r['folded_measurements_per_s']:,.0f}/s",
        f"  worker start-up to ready {r['worker_startup_s']:.1f} s "
        f"({r['processed_before_ready']:,} processed before), timed {r['timed_s']:.1f} s; "
        f"worker CPU {r['worker_cpu_share']:.0%} of a core "
        f"= {r['measurements_per_worker_cpu_s'] or 0:,.0f} per CPU-second; broker CPU "
        f"{(r['broker_cpu_share'] or 0):.0%}; VmHWM {r['worker_vm_hwm_mib']:.0f} MiB",
        f"  commits (committed / end, one sample a second): {r['commit_sparkline']}; "
        f"longest gap between commit advances {r['longest_commit_gap_s']} s",
        *(f"    {line}" for line in r["commit_table"]),
        f"  usage changelog: {r['changelog_messages']:,} record writes "
        f"({r['changelog_writes_per_measurement']:.3f} per measurement); "
        f"a record at the end is ~{r['record_bytes_at_end']:,.0f} B",
    ]
    if "warning" in r:
        lines.append(f"  WARNING: {r['warning']}")
    if "profile" in r:
        lines.append("  profile: " + json.dumps(r["profile"], indent=1))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measurements", type=int, default=None, help="default 300,000")
    parser.add_argument("--raw", action="store_true", help="raw Kafka only (default 1,000,000)")
    parser.add_argument("--batch", type=int, default=100, help="measurements per message")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--grouped", action="store_true", help="one account per envelope")
    parser.add_argument(
        "--realistic", action="store_true", help="ts within the last minute, 10 hot accounts"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the worker")
    parser.add_argument("--timeout", type=float, default=150.0, help="bound of the timed part")
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE worker setting (repeatable)"
    )
    args = parser.parse_args()
    if args.raw:
        with kafka() as broker:
            raw = run_raw(broker, count=args.measurements or 1_000_000, batch=args.batch)
        print(json.dumps(raw, indent=1))
        return
    with kafka() as broker:
        result = run(
            broker,
            count=args.measurements or 300_000,
            batch=args.batch,
            accounts=args.accounts,
            grouped=args.grouped,
            realistic=args.realistic,
            profile=args.profile,
            timeout=args.timeout,
            env=dict(item.split("=", 1) for item in args.env),
            label=f"worker-batch{args.batch}",
        )
    print(describe(result))


if __name__ == "__main__":
    main()
