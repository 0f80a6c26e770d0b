"""The worker's consumer fetches at most `FETCH_BYTES_PER_PARTITION` of a partition at a
time (what it buffers), yet a record larger than that, up to the largest table value,
still reaches it whole: Kafka returns a partition's first record batch whatever its size."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.app import FETCH_BYTES_PER_PARTITION
from streams.tables import MAX_MESSAGE_BYTES

pytestmark = pytest.mark.integration


def test_a_record_larger_than_the_fetch_size_reaches_the_worker_whole(
    kafka_bootstrap: str, unique: str
) -> None:
    topic = f"fetch-size-{unique}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    config = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    for future in admin.create_topics([NewTopic(topic, 1, 1, config=config)]).values():
        future.result(30)
    large = bytes(range(256)) * (3 * FETCH_BYTES_PER_PARTITION // 256)  # 3 MiB
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "message.max.bytes": MAX_MESSAGE_BYTES + 4096}
    )
    for value in (b"before", large, b"after"):
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0

    async def consume() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES_PER_PARTITION,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            values: list[bytes] = []
            while len(values) < 3:
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                for records in batches.values():
                    values.extend(record.value for record in records if record.value)
            return values
        finally:
            await consumer.stop()

    assert asyncio.run(consume()) == [b"before", large, b"after"]
