"""Where a record was read, written `topic[partition]@offset` whichever client read it."""

from __future__ import annotations

from dataclasses import dataclass

from streams.sources import Source, source_of


@dataclass
class AiokafkaMessage:  # faust and aiokafka: attributes
    topic: str
    partition: int
    offset: int


class ConfluentMessage:  # confluent-kafka: methods
    def topic(self) -> str:
        return "bills"

    def partition(self) -> int:
        return 4

    def offset(self) -> int:
        return 1234


def test_a_source_reads_topic_partition_at_offset() -> None:
    assert str(Source("measurements", 2, 7)) == "measurements[2]@7"


def test_the_source_of_a_faust_or_aiokafka_message_comes_from_its_attributes() -> None:
    assert source_of(AiokafkaMessage("stripe.events", 1, 42)) == Source("stripe.events", 1, 42)


def test_the_source_of_a_confluent_kafka_message_comes_from_its_methods() -> None:
    assert str(source_of(ConfluentMessage())) == "bills[4]@1234"
