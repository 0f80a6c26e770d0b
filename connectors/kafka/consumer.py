"""Reading records with confluent-kafka consumers."""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaError, Message


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
