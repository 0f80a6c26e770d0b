"""The worker's bulk producer on a real broker: `deliver` returns once the records are
on Kafka, on the partition faust would choose for their key, and closing it flushes
what was produced and not yet awaited."""

from __future__ import annotations

import pytest

from connectors.kafka.admin import create_topics
from connectors.kafka.consumer import read_to_end
from streams.bulk_producer import BulkProducer
from streams.partitioning import partition_for
from streams.topics import BILLS, ResolvedTopic, Topics

pytestmark = pytest.mark.integration


def bills_topic(bootstrap: str, unique: str) -> ResolvedTopic:
    topic = Topics(prefix=f"{unique}.").resolve(BILLS)
    create_topics(bootstrap, [topic])
    return topic


async def test_deliver_returns_once_every_record_is_on_the_partition_of_its_key(
    kafka_bootstrap: str, unique: str
) -> None:
    resolved = bills_topic(kafka_bootstrap, unique)
    topic = resolved.name
    producer = BulkProducer(kafka_bootstrap)
    accounts = [f"acct-{n}" for n in range(500)]
    await producer.deliver(topic, [(a.encode(), f"bill of {a}".encode(), None) for a in accounts])
    assert producer.pending == 0
    # read right after deliver returned: nothing is still on its way
    found = {m.key(): (m.partition(), m.value()) for m in read_to_end(kafka_bootstrap, topic)}
    assert found == {
        a.encode(): (partition_for(a, resolved.partitions), f"bill of {a}".encode())
        for a in accounts
    }
    await producer.close()


async def test_closing_the_producer_flushes_records_not_yet_awaited(
    kafka_bootstrap: str, unique: str
) -> None:
    topic = bills_topic(kafka_bootstrap, unique).name
    producer = BulkProducer(kafka_bootstrap)
    batch = producer.batch(topic)
    for n in range(200):
        producer.produce(batch, topic, f"acct-{n}".encode(), b"v", None)
    await producer.close()
    assert batch.waiting == 0 and not batch.failed
    assert len(read_to_end(kafka_bootstrap, topic)) == 200
