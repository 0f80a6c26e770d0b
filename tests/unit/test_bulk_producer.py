"""The worker's bulk producer counts a record once Kafka acknowledged it: `deliver`,
a table's `confirm` and the worker's stop wait for that, and a record Kafka refused is
sent again (a fake librdkafka producer stands in for the broker here)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import faust
import pytest
from confluent_kafka import KafkaError

from streams.app import create_app
from streams.bulk_producer import BulkProducer
from streams.partitioning import partition_for
from streams.settings import Settings
from streams.tables import AccountTable, account_table

TIMED_OUT = KafkaError(KafkaError._MSG_TIMED_OUT)


class FakeMessage:
    def __init__(self, topic: str, key: bytes | None, value: bytes | None, partition: int) -> None:
        self._topic, self._key, self._value, self._partition = topic, key, value, partition
        self._offset = -1

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class FakeKafka:
    """librdkafka as the producer sees it: produce() queues, poll() serves the delivery
    reports of the records the test answered (in order), len() counts the unanswered."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.produced: list[tuple[FakeMessage, Callable[[Any, Any], None]]] = []
        self.answers: list[tuple[int, KafkaError | None]] = []
        self.unanswered: set[int] = set()
        self.offsets: dict[tuple[str, int], int] = {}

    def produce(self, topic: str, **kwargs: Any) -> None:
        message = FakeMessage(topic, kwargs["key"], kwargs["value"], kwargs.get("partition", 0))
        self.unanswered.add(len(self.produced))
        self.produced.append((message, kwargs["on_delivery"]))

    def answer(self, index: int, error: KafkaError | None = None) -> None:
        self.answers.append((index, error))

    def poll(self, timeout: float) -> int:
        answers, self.answers = self.answers, []
        for index, error in answers:
            message, report = self.produced[index]
            if error is None:
                where = (message.topic(), message.partition())
                message._offset = self.offsets[where] = self.offsets.get(where, -1) + 1
            self.unanswered.discard(index)
            report(error, message)
        return len(answers)

    def __len__(self) -> int:
        return len(self.unanswered)

    def records(self) -> list[tuple[str, bytes | None, bytes | None, int]]:
        return [(m.topic(), m.key(), m.value(), m.partition()) for m, _ in self.produced]


@pytest.fixture
def kafka() -> list[FakeKafka]:
    return []


def fake_kafka(kafka: list[FakeKafka]) -> Callable[[dict[str, Any]], FakeKafka]:
    """A producer factory that makes the one FakeKafka, kept in `kafka`."""

    def factory(config: dict[str, Any]) -> FakeKafka:
        kafka.append(FakeKafka(config))
        return kafka[0]

    return factory


@pytest.fixture
def producer(kafka: list[FakeKafka]) -> BulkProducer:
    return BulkProducer("127.0.0.1:1", factory=fake_kafka(kafka))


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    """Let the event loop run until `check()` holds (a deadline, not a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


def test_the_producer_uses_the_projects_partitioner_and_never_loses_a_write() -> None:
    config = BulkProducer("127.0.0.1:1").config
    assert config["partitioner"] == "murmur2_random"
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["compression.type"] == "lz4"


async def test_deliver_returns_only_once_kafka_acknowledged_every_record(
    producer: BulkProducer, kafka: list[FakeKafka]
) -> None:
    delivering = asyncio.ensure_future(
        producer.deliver("bills", [(b"acme", b"1", None), (b"globex", b"2", None)])
    )
    await until(lambda: bool(kafka) and len(kafka[0].produced) == 2)
    kafka[0].answer(0)
    await until(lambda: 0 not in kafka[0].unanswered)
    await asyncio.sleep(0.01)  # the loop ran many polls: still not done
    assert not delivering.done()
    kafka[0].answer(1)
    await asyncio.wait_for(delivering, 1)
    assert producer.pending == 0
    await producer.close()


async def test_a_refused_record_is_sent_again_and_deliver_waits_for_it(
    producer: BulkProducer, kafka: list[FakeKafka]
) -> None:
    delivering = asyncio.ensure_future(
        producer.deliver("bills", [(b"acme", b"1", None), (b"globex", b"2", None)])
    )
    await until(lambda: bool(kafka) and len(kafka[0].produced) == 2)
    kafka[0].answer(0)
    kafka[0].answer(1, TIMED_OUT)
    await until(lambda: len(kafka[0].produced) == 3)  # after the back-off
    assert kafka[0].records()[2][1:3] == (b"globex", b"2")
    assert not delivering.done()
    kafka[0].answer(2)
    await asyncio.wait_for(delivering, 1)
    await producer.close()


async def test_close_returns_only_once_kafka_answered_every_record(
    producer: BulkProducer, kafka: list[FakeKafka]
) -> None:
    batch = producer.batch("bills")
    producer.produce(batch, "bills", b"acme", b"1", None)
    closing = asyncio.ensure_future(producer.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    kafka[0].answer(0)
    await asyncio.wait_for(closing, 1)
    assert batch.waiting == 0 and not batch.failed


@pytest.fixture
def table(producer: BulkProducer) -> AccountTable:
    app = faust.App(f"bulk-{id(producer)}", broker="kafka://127.0.0.1:1")
    table = account_table(app, "bills", 6, "test")
    table.use_producer(producer)
    return table


async def test_a_table_write_is_confirmed_only_once_kafka_acknowledged_it(
    table: AccountTable, kafka: list[FakeKafka]
) -> None:
    written = table.send_changelog(3, b"acme|1", b"v1")
    assert written.message.partition == 3
    name = table.changelog_topic.get_topic_name()
    assert kafka[0].records() == [(name, b"acme|1", b"v1", 3)]
    assert table.unconfirmed == 1
    confirming = asyncio.ensure_future(table.confirm())
    await asyncio.sleep(0.01)
    assert not confirming.done()
    kafka[0].answer(0)
    await asyncio.wait_for(confirming, 1)
    assert table.unconfirmed == 0


async def test_a_refused_table_write_is_sent_again_with_the_keys_latest_value(
    table: AccountTable, kafka: list[FakeKafka]
) -> None:
    table.data[b"acme|1"] = b"v2"  # a later write overtook the refused one
    table.send_changelog(3, b"acme|1", b"v1")
    confirming = asyncio.ensure_future(table.confirm())
    kafka[0].answer(0, TIMED_OUT)
    await until(lambda: len(kafka[0].produced) == 2)
    assert kafka[0].records()[1][1:] == (b"acme|1", b"v2", table.partition_for_key(b"acme|1"))
    assert not confirming.done()
    kafka[0].answer(1)
    await asyncio.wait_for(confirming, 1)


async def test_a_table_key_set_or_deleted_goes_through_the_producer(
    table: AccountTable, kafka: list[FakeKafka]
) -> None:
    table.on_key_set(b"acme|1", b"v1")
    table.on_key_del(b"acme|1")
    partition = table.partition_for_key(b"acme|1")
    assert [record[1:] for record in kafka[0].records()] == [
        (b"acme|1", b"v1", partition),
        (b"acme|1", None, partition),
    ]
    kafka[0].answer(0)
    kafka[0].answer(1)
    await asyncio.wait_for(table.confirm(), 1)


async def test_an_accounts_keys_written_at_once_reach_its_partition_the_table_and_watchers(
    table: AccountTable, kafka: list[FakeKafka]
) -> None:
    changed: list[str] = []
    table.watch(changed.append)
    table.write("ac|me", {b"ac%7Cme": b"index", b"ac%7Cme|bill_1": b"v1"})
    partition = partition_for("ac|me", 6)
    name = table.changelog_topic.get_topic_name()
    assert kafka[0].records() == [
        (name, b"ac%7Cme", b"index", partition),
        (name, b"ac%7Cme|bill_1", b"v1", partition),
    ]
    assert (table[b"ac%7Cme"], table[b"ac%7Cme|bill_1"]) == (b"index", b"v1")
    assert changed == ["ac|me"]
    confirming = asyncio.ensure_future(table.confirm())
    await asyncio.sleep(0.01)
    assert not confirming.done()  # confirmed only once Kafka acknowledged both
    kafka[0].answer(0)
    kafka[0].answer(1)
    await asyncio.wait_for(confirming, 1)


def test_a_key_of_another_account_is_refused_and_nothing_is_written(
    table: AccountTable, kafka: list[FakeKafka]
) -> None:
    with pytest.raises(ValueError, match=r"b'acme2\|1'.* not keys of account 'acme'"):
        table.write("acme", {b"acme|1": b"v1", b"acme2|1": b"v2"})
    assert not kafka or not kafka[0].produced
    assert b"acme|1" not in table


async def test_the_workers_billing_tables_write_through_one_producer_that_stopping_flushes(
    kafka: list[FakeKafka],
) -> None:
    app = create_app(Settings(partitions=2))
    bills, index = app.tables["bills"], app.tables["billindex"]
    assert isinstance(bills, AccountTable) and isinstance(index, AccountTable)
    producer = bills.producer
    assert producer is not None and index.producer is producer
    assert producer.watch is app.watchdog  # its sends in flight show in /healthz
    producer._factory = fake_kafka(kafka)
    bills.send_changelog(0, b"acme|1", b"v1")
    stopping = asyncio.ensure_future(app.on_before_shutdown.send())
    await asyncio.sleep(0.01)
    assert not stopping.done()  # the worker's stop waits for Kafka's answer
    kafka[0].answer(0)
    await asyncio.wait_for(stopping, 1)
    assert producer.pending == 0
