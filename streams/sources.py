"""Where a record came from: `topic[partition]@offset`, the one way logs and dead
letters name a Kafka position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Source:
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def source_of(message: Any) -> Source:
    """The Source of a faust/aiokafka message (attributes) or a confluent-kafka one (methods)."""
    topic, partition, offset = message.topic, message.partition, message.offset
    if callable(topic):
        topic, partition, offset = topic(), partition(), offset()
    return Source(topic, partition, offset)
