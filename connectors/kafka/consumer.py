"""Reading records with confluent-kafka consumers."""

from __future__ import annotations

import logging
import uuid

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition


def poll_record(
    consumer: Consumer, timeout: float, log: logging.Logger, what: str
) -> Message | None:
    """The next record within `timeout` s; None when none came, at the end of a partition,
    or on an error of the consumer (logged as `<what>: <error>`; librdkafka recovers from
    it on its own)."""
    message = consumer.poll(timeout)
    if message is None:
        return None
    error = message.error()
    if error is not None:
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("%s: %s", what, error)
        return None
    return message


def read_to_end(bootstrap: str, topic: str, timeout: float = 10.0) -> list[Message]:
    """Every record of `topic` (all partitions), read up to each partition's end as it was
    when reading began; no consumer group offsets are committed."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    found: list[Message] = []
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        for partition in sorted(partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            consumer.assign([TopicPartition(topic, partition, low)])
            position = low
            while position < high:
                message = consumer.poll(timeout)
                if message is None:
                    raise TimeoutError(f"reading {topic}[{partition}] timed out at {position}")
                if message.error() is not None:
                    continue
                position = (message.offset() or 0) + 1
                found.append(message)
    finally:
        consumer.close()
    return found
