"""Where a record was read: `topic[partition]@offset`, the one way logs and dead letters
name a Kafka record.

`source_of` reads it from a message of either client the project uses: faust/aiokafka
messages carry `topic`, `partition` and `offset` as attributes, confluent-kafka's
`Message` as methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Source:
    """A record's position in Kafka; `str()` is `topic[partition]@offset`."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def source_of(message: Any) -> Source:
    """The position of a faust/aiokafka message (attributes) or a confluent-kafka
    `Message` (methods)."""
    return Source(_read(message, "topic"), _read(message, "partition"), _read(message, "offset"))


def _read(message: Any, name: str) -> Any:
    value = getattr(message, name)
    return value() if callable(value) else value
