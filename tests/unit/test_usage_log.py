"""The usage log's storage (`streams.usage.log`): every changelog record faust reads goes
to the engine, a record it cannot read is skipped and named (recovery never wedges),
and the usage records of the worker before the engine are read as segments, so an
upgraded worker keeps its usage and its de-duplication memory."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.clock import HOUR_MS
from streams.usage.engine import ReferenceEngine
from streams.usage.log import UsageLogStore
from streams.usage.metering import Metering
from streams.usage.store import merged_states
from tests.unit.usage_engine_factories import (
    AGGREGATIONS,
    CATALOG,
    NOW,
    PARTITIONS,
    T0,
    Log,
    home,
    m,
    message,
)

LOG_TOPIC = "meterline-usage-changelog"


def store(engine: ReferenceEngine) -> UsageLogStore:
    topic = SimpleNamespace(get_topic_name=lambda: LOG_TOPIC)
    table = SimpleNamespace(name="usage", changelog_topic=topic)
    return UsageLogStore(
        "memory://", SimpleNamespace(), table, engine=engine, partitions=PARTITIONS
    )


def events(records: list[tuple[bytes, bytes | None]], partition: int = 0) -> list[Any]:
    return [
        SimpleNamespace(
            message=SimpleNamespace(
                key=key, value=value, topic=LOG_TOPIC, partition=partition, offset=offset
            )
        )
        for offset, (key, value) in enumerate(records)
    ]


def apply(target: UsageLogStore, records: list[tuple[bytes, bytes | None]]) -> None:
    target.apply_changelog_batch(events(records), lambda k: k, lambda v: v)


def total(engine: ReferenceEngine, account: str = "acme") -> Any:
    return engine.period_values(account, AGGREGATIONS, T0 - 100 * HOUR_MS, NOW + HOUR_MS)


def test_the_log_read_through_the_store_gives_the_engine_the_original_usage() -> None:
    original, log = ReferenceEngine(PARTITIONS, CATALOG), Log()
    log.write(original.process([message(0, m("a", 1), m("b", 2))], NOW).deltas)
    round_ = original.snapshot(home("acme"))
    log.write_round(round_)
    original.confirm_snapshot(round_)
    log.tombstone(round_.obsolete)
    log.write(original.process([message(1, m("c", 4))], NOW).deltas)

    replica = ReferenceEngine(PARTITIONS, CATALOG)
    apply(store(replica), log.records)
    assert total(replica) == total(original)
    assert total(replica)["calls_sum"] == 7


def test_an_unreadable_record_is_skipped_named_by_its_offset_and_the_rest_applied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    original, log = ReferenceEngine(PARTITIONS, CATALOG), Log()
    log.write(original.process([message(0, m("a", 1))], NOW).deltas)
    log.records.insert(0, (b"|delta|0|9|0", b"{not json"))
    replica = ReferenceEngine(PARTITIONS, CATALOG)
    target = store(replica)
    with caplog.at_level(logging.ERROR):
        apply(target, log.records)
    assert target.stats["usage_log_unreadable"] == 1
    assert f"{LOG_TOPIC}[0]@0" in caplog.text and "cannot be read" in caplog.text
    assert total(replica)["calls_sum"] == 1


def test_usage_records_of_the_worker_before_the_engine_are_read_as_segments() -> None:
    # today's pipeline wrote one record per account-hour: usage and uids
    records: dict[str, bytes] = {}
    batch = [message(0, m("a", 1), m("b", 2, ts=T0 + HOUR_MS), m("c", 4, account="initech"))]
    outcome = Metering().process(batch, CATALOG, NOW, records.get)
    records.update(outcome.writes)

    upgraded = ReferenceEngine(PARTITIONS, CATALOG)
    apply(store(upgraded), [(key.encode(), value) for key, value in records.items()])

    codes = list(AGGREGATIONS)
    span = (T0 - HOUR_MS, T0 + 2 * HOUR_MS)
    for account in ("acme", "initech"):
        before = merged_states(records.get, account, codes, *span, lambda h: h)
        assert upgraded.query(account, codes, *span, HOUR_MS) == before
    again = upgraded.process(batch, NOW)  # the same measurements: remembered
    assert (again.stats.accepted, again.stats.duplicates) == (0, 3)


async def test_a_rebalance_closes_revoked_partitions_until_recovery_names_the_actives() -> None:
    engine = ReferenceEngine(PARTITIONS, CATALOG)
    engine.process([message(0, m("a", 1))], NOW)
    target = store(engine)
    assert target.writable is None  # no group yet: every partition
    await target.on_rebalance(set(), {TP("measurements", home("acme"))}, set())
    assert home("acme") not in (target.writable or set())
    others = [p for p in range(PARTITIONS) if p != home("acme")]
    await target.on_recovery_completed({TP(LOG_TOPIC, p) for p in others}, set())
    assert target.writable == set(others)
    assert total(engine)["calls_sum"] is None  # the partition moved away: forgotten
