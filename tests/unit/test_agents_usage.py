"""The usage agent without a broker (faust's `agent.test_context()`): a batch of
`measurements` messages is folded by the usage engine, its delta written to the usage
log and its rejections dead-lettered, and faust acknowledges the batch only once Kafka
holds both."""

from __future__ import annotations

import logging
import os
from decimal import Decimal
from typing import Any

import pytest

from streams.agents import usage as usage_agent
from streams.clock import HOUR_MS
from streams.schemas.catalog import AggregationFunction
from streams.usage.log import UsageLogTable
from tests.fixtures.worker import (
    PARTITIONS,
    USAGE_BATCH_MESSAGES,
    OfflineWorker,
    acked,
    held_by_the_changelog,
    home,
    measurement,
    message,
    settled,
)

ACCOUNT = "acme"


def recent(offline: OfflineWorker, uid: str, calls: Any) -> dict[str, Any]:
    """A measurement of ACCOUNT an hour before the worker's clock."""
    return measurement(uid, calls, account=ACCOUNT, ts_ms=offline.now_ms - HOUR_MS)


def api_calls(offline: OfflineWorker) -> Decimal | None:
    """The account's `api_calls` (SUM of calls) over the last day, as bill runs read it."""
    assert offline.context.usage is not None
    values = offline.context.usage.period_values(
        ACCOUNT,
        {"api_calls": AggregationFunction.SUM},
        offline.now_ms - 24 * HOUR_MS,
        offline.now_ms,
    )
    return values["api_calls"]


async def test_a_batch_folds_the_valid_counts_a_duplicate_once_and_dead_letters_the_invalid(
    offline: OfflineWorker,
) -> None:
    batch = [
        message(recent(offline, "m-1", 7)),
        # the same uid again (a producer's retry), in an envelope beside a new one
        message(recent(offline, "m-1", 7), recent(offline, "m-2", 5)),
        message(recent(offline, "m-3", "seven")),
    ]
    assert len(batch) == USAGE_BATCH_MESSAGES
    async with offline.agent("usage").test_context() as agent:
        events = [
            await agent.put(value, key=ACCOUNT.encode(), partition=home(ACCOUNT)) for value in batch
        ]
        await acked(*events)

    assert api_calls(offline) == Decimal(12)
    assert offline.context.stats["measurements_accepted"] == 2
    assert offline.context.stats["measurements_duplicate"] == 1
    [dead] = offline.kafka.on(offline.topics.measurements_rejected)
    assert dead.key == ACCOUNT.encode()
    letter = dead.json()
    assert letter["field"] == "measure.calls"
    assert letter["reason"] == "expected a number"
    assert letter["measurement"]["uid"] == "m-3"
    assert letter["source"] == f"{offline.topics.measurements}[{home(ACCOUNT)}]@2"


async def test_a_batch_is_not_acknowledged_before_kafka_holds_its_usage_delta(
    offline: OfflineWorker,
) -> None:
    offline.kafka.hold()
    batch = [message(recent(offline, f"m-{n}", n)) for n in range(USAGE_BATCH_MESSAGES)]
    async with offline.agent("usage").test_context() as agent:
        events = [
            await agent.put(value, key=ACCOUNT.encode(), partition=home(ACCOUNT)) for value in batch
        ]
        assert await held_by_the_changelog(offline.kafka, *events)
        offline.kafka.release()
        await acked(*events)
    assert offline.context.stats["measurements_accepted"] == USAGE_BATCH_MESSAGES


async def test_a_batch_read_before_a_rebalance_took_a_partition_leaves_its_events_unacked(
    offline: OfflineWorker,
) -> None:
    other = next(p for p in range(PARTITIONS) if p != home(ACCOUNT))
    table = offline.app.tables["usage"]
    assert isinstance(table, UsageLogTable)
    table.store.writable = {home(ACCOUNT)}  # `other` was revoked by a rebalance in progress
    batch = [
        (message(recent(offline, "m-1", 3)), home(ACCOUNT)),
        (message(measurement("m-2", 4, account="x", ts_ms=offline.now_ms)), other),
        (message(recent(offline, "m-3", 5)), home(ACCOUNT)),
    ]
    async with offline.agent("usage").test_context() as agent:
        events = [await agent.put(v, key=ACCOUNT.encode(), partition=p) for v, p in batch]
        await acked(events[0], events[2])
        assert not events[1].message.acked  # its new owner reads it again
    assert api_calls(offline) == Decimal(8)
    assert offline.context.stats["measurements_left_to_new_owner"] == 1


async def test_an_engine_failure_dead_letters_the_batch_with_the_reason_and_the_worker_goes_on(
    offline: OfflineWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = offline.app.tables["usage"]
    assert isinstance(table, UsageLogTable)

    def broken(*_: Any) -> Any:
        raise RuntimeError("a panic outside a measurement's guard")

    working = table.engine.process
    monkeypatch.setattr(table.engine, "process", broken)
    batch = [message(recent(offline, f"m-{n}", n)) for n in range(USAGE_BATCH_MESSAGES)]
    async with offline.agent("usage").test_context() as agent:
        events = [await agent.put(v, key=ACCOUNT.encode(), partition=home(ACCOUNT)) for v in batch]
        await acked(*events)  # refused, not left to block the partition
    letters = [dead.json() for dead in offline.kafka.on(offline.topics.measurements_rejected)]
    assert len(letters) == USAGE_BATCH_MESSAGES
    assert all("internal error of the usage engine" in letter["reason"] for letter in letters)
    assert letters[0]["measurement"]["uid"] == "m-0"
    monkeypatch.setattr(table.engine, "process", working)
    again = [message(recent(offline, f"k-{n}", 1)) for n in range(USAGE_BATCH_MESSAGES)]
    async with offline.agent("usage").test_context() as agent:
        events = [await agent.put(v, key=ACCOUNT.encode(), partition=home(ACCOUNT)) for v in again]
        await acked(*events)
    assert api_calls(offline) == Decimal(USAGE_BATCH_MESSAGES)


async def test_a_failing_usage_hook_costs_no_usage_and_the_batch_is_acked(
    offline: OfflineWorker,
) -> None:
    def broken_hook(_: Any) -> None:
        raise RuntimeError("the alert rules could not be read")

    offline.context.usage_seen.append(broken_hook)
    batch = [message(recent(offline, f"m-{n}", 2)) for n in range(USAGE_BATCH_MESSAGES)]
    async with offline.agent("usage").test_context() as agent:
        events = [await agent.put(v, key=ACCOUNT.encode(), partition=home(ACCOUNT)) for v in batch]
        await acked(*events)
    assert api_calls(offline) == Decimal(2 * USAGE_BATCH_MESSAGES)


async def test_a_failure_between_folding_a_batch_and_acking_it_stops_the_worker(
    offline: OfflineWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Going on would commit later batches while the failed batch's usage is in memory
    only; the worker exits instead and its restart reads the batch again."""
    exits: list[int] = []

    class Exited(BaseException):
        pass

    def exit_(code: int) -> None:
        exits.append(code)
        raise Exited

    monkeypatch.setattr(os, "_exit", exit_)
    monkeypatch.setattr(logging, "shutdown", lambda: None)

    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug after the fold")

    monkeypatch.setattr(usage_agent, "_records", broken)
    batch = [message(recent(offline, f"m-{n}", 1)) for n in range(USAGE_BATCH_MESSAGES)]
    with pytest.raises(Exited):
        async with offline.agent("usage").test_context() as agent:
            events = [
                await agent.put(v, key=ACCOUNT.encode(), partition=home(ACCOUNT)) for v in batch
            ]
            await settled(lambda: exits)
    assert exits == [usage_agent.EXIT_USAGE_AGENT_FAILED]
    assert not any(event.message.acked for event in events)
