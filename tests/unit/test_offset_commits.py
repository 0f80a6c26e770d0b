"""Which offsets the worker may commit: never one past a message handed to an agent and
not acked (a lost or unfinished batch is read again after a restart, not skipped)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from faust.types import TP, Message

from streams.app import create_app
from streams.commits import InOrderConsumer
from streams.settings import Settings

TOPIC = "bill.commands"  # a topic faust streams to an agent (measurements go in bulk)
PARTITION = TP(TOPIC, 0)


@pytest.fixture
def consumer() -> Iterator[InOrderConsumer]:
    app = create_app(Settings(partitions=1))
    conductor: Any = app.topics
    conductor._acking_topics.add(TOPIC)  # what faust does when an agent subscribes
    made = app.consumer
    assert isinstance(made, InOrderConsumer)
    yield made


def delivered(consumer: InOrderConsumer, *offsets: int) -> dict[int, Message]:
    """Messages of partition 0 handed to a stream, by offset."""
    messages = {}
    for offset in offsets:
        message = Message(TOPIC, 0, offset, 0.0, 0, None, b"k", b"v", None, tp=PARTITION)
        # what a faust stream does with a message it takes
        consumer._unacked_messages.add(message)
        consumer.app.sensors.on_message_in(PARTITION, offset, message)
        messages[offset] = message
    return messages


def committable(consumer: InOrderConsumer) -> int | None:
    return consumer._filter_committable_offsets([PARTITION]).get(PARTITION)


def commit(consumer: InOrderConsumer) -> int | None:
    """What faust's commit would write, recorded as committed."""
    offset = committable(consumer)
    if offset is not None:
        consumer._committed_offset[PARTITION] = offset
    return offset


def test_a_message_at_the_committed_offset_not_acked_holds_the_commit_back(
    consumer: InOrderConsumer,
) -> None:
    consumer._committed_offset[PARTITION] = 10
    messages = delivered(consumer, 10, 11, 12)
    consumer.ack(messages[11])
    consumer.ack(messages[12])
    # faust's own rule committed 13 here: offset 10 would never be read again
    assert committable(consumer) is None
    consumer.ack(messages[10])
    assert commit(consumer) == 13


def test_before_any_commit_the_first_message_delivered_must_be_acked_first(
    consumer: InOrderConsumer,
) -> None:
    messages = delivered(consumer, 0, 1, 2, 3)
    consumer.ack(messages[2])
    consumer.ack(messages[3])
    assert committable(consumer) is None
    consumer.ack(messages[0])
    assert commit(consumer) == 1  # 1 is still being processed
    consumer.ack(messages[1])
    assert commit(consumer) == 4


def test_a_batch_acked_after_a_later_one_is_committed_in_order(
    consumer: InOrderConsumer,
) -> None:
    consumer._committed_offset[PARTITION] = 100
    messages = delivered(consumer, *range(100, 110))
    for offset in range(105, 110):
        consumer.ack(messages[offset])
    assert committable(consumer) is None
    for offset in range(100, 105):
        consumer.ack(messages[offset])
    assert commit(consumer) == 110


def test_reading_that_starts_after_the_committed_offset_commits_from_there(
    consumer: InOrderConsumer,
) -> None:
    # offsets 10 and 11 are gone (retention, compaction or a transaction marker)
    consumer._committed_offset[PARTITION] = 10
    messages = delivered(consumer, 12, 13)
    consumer.ack(messages[12])
    assert commit(consumer) == 13


def test_offsets_missing_while_fetching_count_as_acked(consumer: InOrderConsumer) -> None:
    consumer._committed_offset[PARTITION] = 20
    messages = delivered(consumer, 20, 25)
    consumer._gap[PARTITION].addi(21, 25)  # faust saw 21..24 missing
    consumer.ack(messages[25])
    assert committable(consumer) is None
    consumer.ack(messages[20])
    assert commit(consumer) == 26


async def test_after_a_rebalance_reading_starts_again_at_the_committed_offset(
    consumer: InOrderConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_broker(*args: Any, **kwargs: Any) -> bool:
        return False  # the commit a revocation makes for the bulk intake needs a broker

    monkeypatch.setattr(consumer, "commit", no_broker)
    consumer._committed_offset[PARTITION] = 50
    first = delivered(consumer, 50, 51, 52)
    consumer.ack(first[50])
    assert commit(consumer) == 51
    # the partition is revoked and assigned again: reading restarts at 51
    await consumer.on_partitions_revoked({PARTITION})
    consumer._committed_offset[PARTITION] = 51
    consumer.ack(first[52])  # a batch of before the rebalance finishes late
    again = delivered(consumer, 51, 52, 53)
    assert committable(consumer) is None
    consumer.ack(again[51])
    assert commit(consumer) == 53
    consumer.ack(again[53])
    assert commit(consumer) == 54


async def test_records_fetched_for_a_partition_paused_before_their_turn_are_still_handed_over(
    consumer: InOrderConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust would drop them without seeking back: never read again, and with our commit
    rule the partition's commits would stop there (a worker started with a backlog)."""
    from aiokafka.structs import ConsumerRecord, TopicPartition

    live = {PARTITION}
    fetched = [
        ConsumerRecord(TOPIC, 0, offset, 0, 0, b"k", b"v", None, 1, 1, []) for offset in (4, 5, 6)
    ]

    async def fetch(self: Any, timeout: float) -> tuple[Any, Any]:
        return {TopicPartition(TOPIC, 0): fetched}, live

    monkeypatch.setattr(InOrderConsumer.__mro__[1], "_wait_next_records", fetch)
    monkeypatch.setattr(InOrderConsumer, "flow_active", True, raising=False)
    monkeypatch.setattr(consumer, "highwater", lambda tp: 7)
    handed = []
    async for _, message in consumer.getmany(1.0):
        handed.append(message.offset)
        live.discard(PARTITION)  # paused while the first record was being delivered
    assert handed == [4, 5, 6]


async def test_a_fetch_that_finds_nothing_new_is_held_by_the_broker_a_tenth_of_a_second(
    consumer: InOrderConsumer,
) -> None:
    """aiokafka sends one fetch at a time to a broker: while the measurements wait in the
    bulk intake, a fetch of the idle topics alone is in flight, and the measurements
    asked for again are fetched only after it (faust would let the broker hold it 1.5 s:
    the usage engine sat idle that long every few batches)."""
    thread: Any = consumer._new_consumer_thread()
    made = thread._create_worker_consumer(thread.transport)
    try:
        assert made._fetch_max_wait_ms == 100
    finally:
        await made.stop()


async def test_while_the_intake_holds_partitions_back_a_fetch_waits_a_hundredth_of_a_second(
    consumer: InOrderConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch waiting for records of the partitions still active returns within 10 ms
    while the intake holds some back, so one it asks for again is read at once; with
    none held back it waits as long as faust asks (new records wake it)."""
    from aiokafka.structs import ConsumerRecord

    from streams.usage.intake import BulkIntake

    waited: list[float] = []

    async def fetch(self: Any, timeout: float) -> tuple[Any, Any]:
        waited.append(timeout)
        return {}, set()

    monkeypatch.setattr(InOrderConsumer.__mro__[1], "_wait_next_records", fetch)
    intake = BulkIntake("measurements", high=1, low=1)
    consumer.use_intake(intake)
    await consumer._wait_next_records(1.0)
    records = [
        ConsumerRecord("measurements", 0, n, 0, 0, b"k", b"v", None, 1, 1, []) for n in (0, 1)
    ]
    intake.put(TP("measurements", 0), records)  # over `high`: held back
    assert intake.paused
    await consumer._wait_next_records(1.0)
    assert waited == [1.0, 0.01]


async def test_records_fetched_while_a_rebalance_seeks_reach_no_stream_until_the_flow_resumes(
    consumer: InOrderConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust's recovery seeks to the committed offsets and then clears the streams' queues:
    a record handed over in between would be cleared unread, past the fetch position, and
    the partition's commits would stop at it (a loaded worker started with a backlog)."""
    from aiokafka.structs import ConsumerRecord, TopicPartition

    fetched = [
        ConsumerRecord(TOPIC, 0, offset, 0, 0, b"k", b"v", None, 1, 1, []) for offset in (3, 4)
    ]
    seeks = []

    async def fetch(self: Any, timeout: float) -> tuple[Any, Any]:
        return {TopicPartition(TOPIC, 0): fetched}, {PARTITION}

    async def seek_to_committed() -> dict[TP, int]:
        seeks.append(consumer.flow_active)
        return {PARTITION: 3}

    monkeypatch.setattr(InOrderConsumer.__mro__[1], "_wait_next_records", fetch)
    monkeypatch.setattr(consumer, "seek_to_committed", seek_to_committed)
    monkeypatch.setattr(consumer, "highwater", lambda tp: 5)
    consumer.resume_flow()
    await consumer.perform_seek()  # what recovery does after resuming the stream partitions
    assert seeks == [False]
    assert [message.offset async for _, message in consumer.getmany(1.0)] == []
    consumer.app.flow_control.resume()  # clears the streams' queues: nothing was in them
    consumer.resume_flow()
    assert [message.offset async for _, message in consumer.getmany(1.0)] == [3, 4]


async def test_a_seek_to_the_committed_offsets_rewinds_a_stream_partition_never_committed(
    consumer: InOrderConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust drops records fetched while its flow was stopped and counts on this seek to
    read them again; aiokafka does not move a partition without a committed offset."""
    changelog = TP(sorted(consumer.app.tables.changelog_topics)[0], 0)
    never, zero, committed = TP(TOPIC, 0), TP(TOPIC, 1), TP(TOPIC, 2)
    rewound: list[TP] = []

    class Thread:
        async def seek_to_committed(self) -> dict[TP, int | None]:
            return {never: None, zero: 0, committed: 7, changelog: None}

        async def seek_to_beginning(self, *partitions: TP) -> None:
            rewound.extend(partitions)

    monkeypatch.setattr(consumer, "_thread", Thread())
    await consumer.perform_seek()
    assert sorted(rewound) == [never, zero]  # the changelog is recovery's to seek
    assert consumer._committed_offset[committed] == 7


async def test_partitions_a_rebalance_took_before_the_seek_to_their_beginning_are_left_to_it(
    consumer: InOrderConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next rebalance's recovery seeks again; this one still records what it found."""
    from aiokafka.errors import IllegalStateError

    class Thread:
        async def seek_to_committed(self) -> dict[TP, int | None]:
            return {TP(TOPIC, 0): None, TP(TOPIC, 1): 4}

        async def seek_to_beginning(self, *partitions: TP) -> None:
            raise IllegalStateError(f"Partitions {set(partitions)} are not assigned")

    monkeypatch.setattr(consumer, "_thread", Thread())
    consumer.resume_flow()
    await consumer.perform_seek()
    assert consumer._committed_offset[TP(TOPIC, 1)] == 4
    assert not consumer.flow_active  # recovery resumes it once the streams' queues are clear
