"""The bulk intake of `measurements`: whole fetches in, batches out in order, fetching
paused while too much waits, and a rebalance drops what waits and waits for what is in
flight; the consumer commits only offsets of batches marked done."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.structs import TopicPartition
from faust.types import TP

from streams.app import create_app
from streams.commits import InOrderConsumer
from streams.settings import Settings
from streams.usage.intake import BulkIntake

TOPIC = "measurements"
P0, P1 = TP(TOPIC, 0), TP(TOPIC, 1)


@dataclass
class FakeRecord:
    offset: int
    key: bytes | None = b"acme"
    value: bytes | None = b"{}"


def records(*offsets: int) -> list[FakeRecord]:
    return [FakeRecord(offset) for offset in offsets]


def intake(**kwargs: Any) -> BulkIntake:
    return BulkIntake(TOPIC, high=kwargs.pop("high", 100), low=kwargs.pop("low", 50), **kwargs)


async def test_a_batch_takes_an_equal_share_of_each_partition_in_offset_order() -> None:
    waiting = intake()
    waiting.put(P0, records(0, 1, 2))
    waiting.put(P1, records(10, 11))
    waiting.put(P0, records(3, 4, 5, 6))
    first = await waiting.take(4)
    assert [(p.tp, [r.offset for r in p.records]) for p in first.parts] == [
        (P0, [0, 1]),
        (P1, [10, 11]),
    ]
    assert first.ends() == {P0: 2, P1: 12}
    assert first.starts() == {P0: 0, P1: 10}
    second = await waiting.take(3)
    assert [(p.tp, [r.offset for r in p.records]) for p in second.parts] == [
        (P0, [2]),
        (P0, [3, 4]),
    ]
    assert second.ends() == {P0: 5} and second.starts() == {P0: 2}
    third = await waiting.take(100)
    assert [(p.tp, [r.offset for r in p.records]) for p in third.parts] == [(P0, [5, 6])]
    assert waiting.waiting == 0


async def test_a_partition_with_less_than_its_share_leaves_its_room_to_the_others() -> None:
    waiting = intake()
    waiting.put(P0, records(*range(10)))
    waiting.put(P1, records(20))
    taken = await waiting.take(6)
    assert sorted((p.tp.partition, r.offset) for p in taken.parts for r in p.records) == [
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 4),
        (1, 20),
    ]
    assert waiting.waiting == 5


async def test_take_waits_for_records() -> None:
    waiting = intake()
    taking = asyncio.ensure_future(waiting.take(10))
    await asyncio.sleep(0.01)
    assert not taking.done()
    waiting.put(P0, records(7))
    taken = await asyncio.wait_for(taking, 1)
    assert taken.ends() == {P0: 8}


async def test_fetching_pauses_above_high_and_resumes_below_low() -> None:
    paused: list[TP] = []
    resumed: list[TP] = []
    waiting = intake(high=4, low=2, pause=paused.append, resume=resumed.append)
    waiting.put(P0, records(0, 1, 2))
    assert paused == []
    waiting.put(P0, records(3, 4))
    waiting.put(P1, records(0))
    assert paused == [P0, P1]
    await waiting.take(3)  # 3 left: not below low yet
    assert resumed == []
    await waiting.take(2)
    assert sorted(resumed) == [P0, P1]


async def test_fetching_pauses_above_high_bytes_of_values_whatever_the_count() -> None:
    paused: list[TP] = []
    resumed: list[TP] = []
    waiting = intake(
        high=100, low=50, high_bytes=10, low_bytes=6, pause=paused.append, resume=resumed.append
    )
    large = [FakeRecord(0, value=b"x" * 8), FakeRecord(1, value=b"x" * 4)]
    waiting.put(P0, large)  # 2 messages, 12 bytes of values
    assert paused == [P0] and waiting.waiting_bytes == 12
    await waiting.take(1)  # 4 bytes left: below low_bytes
    assert resumed == [P0] and waiting.waiting_bytes == 4


async def test_a_revocation_drops_what_waits_starts_an_epoch_and_waits_for_batches_in_flight() -> (
    None
):
    in_flight = asyncio.get_running_loop().create_future()
    drained: list[bool] = []

    async def drain() -> None:
        await in_flight
        drained.append(True)

    waiting = intake(drain=drain)
    waiting.put(P0, records(0, 1))
    taken = await waiting.take(1)
    waiting.put(P1, records(5))
    revoking = asyncio.ensure_future(waiting.revoke({P0, P1}))
    await asyncio.sleep(0.01)
    assert not revoking.done()  # the batch in flight lands first
    in_flight.set_result(None)
    await asyncio.wait_for(revoking, 1)
    assert drained == [True]
    assert waiting.waiting == 0 and not waiting.parts
    assert not waiting.current(taken)  # taken before: dropped by the usage loop


@pytest.fixture
def consumer() -> Iterator[InOrderConsumer]:
    app = create_app(Settings(partitions=2))
    made = app.consumer
    assert isinstance(made, InOrderConsumer)
    assert made.intake is not None and made.intake.topic == TOPIC
    yield made


def committable(consumer: InOrderConsumer, tp: TP) -> int | None:
    return consumer._filter_committable_offsets([tp]).get(tp)


def test_the_consumer_commits_what_a_batch_marked_done_and_nothing_before(
    consumer: InOrderConsumer,
) -> None:
    consumer._committed_offset[P0] = 10
    assert committable(consumer, P0) is None  # fetched, not done: nothing to commit
    consumer.intake_done({P0: 15})
    assert committable(consumer, P0) == 15
    consumer._committed_offset[P0] = 15
    consumer.intake_done({P0: 12})  # never backwards
    assert committable(consumer, P0) is None


async def test_the_consumer_hands_measurements_records_to_the_intake_and_keeps_the_rest(
    consumer: InOrderConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = TopicPartition("stripe.events", 0)
    fetched = {TopicPartition(TOPIC, 1): records(3, 4), other: records(9)}

    async def fetch(self: Any, timeout: float) -> tuple[Any, Any]:
        return fetched, set()

    monkeypatch.setattr(InOrderConsumer.__mro__[1], "_wait_next_records", fetch)
    monkeypatch.setattr(InOrderConsumer, "flow_active", True, raising=False)
    rest, _ = await consumer._wait_next_records(1.0)
    assert list(rest) == [other]
    assert consumer.intake is not None
    taken = await consumer.intake.take(10)
    assert taken.ends() == {P1: 5}
    assert isinstance(next(iter(taken.ends())), TP)  # faust's key, not aiokafka's


async def test_a_batch_done_is_committed_at_once_and_once_more_when_another_lands_meanwhile(
    consumer: InOrderConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits: list[int | None] = []
    gate = asyncio.Event()

    async def commit(self: Any, *args: Any, **kwargs: Any) -> bool:
        commits.append(committable(self, P0))
        await gate.wait()
        return True

    monkeypatch.setattr(InOrderConsumer, "commit", commit)
    consumer._committed_offset[P0] = 0
    consumer.intake_done({P0: 5})
    consumer.commit_soon()  # no wait for the commit timer
    await asyncio.sleep(0)
    consumer.intake_done({P0: 9})
    consumer.commit_soon()  # while the first commit runs: one more after it
    consumer.commit_soon()
    gate.set()
    assert consumer._committing is not None
    await asyncio.wait_for(consumer._committing, 1)
    assert commits == [5, 9]
