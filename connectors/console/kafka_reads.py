"""What the console reads from Kafka itself, with confluent-kafka.

- `TopicMirror`: the latest value of every key of a few topics, read from the beginning
  in a thread (no consumer group, no commits): the worker's `accounts` and
  `accountplans` table changelogs, the catalog and the Stripe sink's ledger.
- `tail`: the last records of a topic (a bounded number per partition): dead letters.
- `group_lag`: a consumer group's committed offsets against each partition's end.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.kafka.consumer import poll_record
from streams.kafka_access import Kafka, client_config
from streams.sources import Source

log = logging.getLogger(__name__)


def _consumer(kafka: Kafka, purpose: str, **extra: object) -> Consumer:
    return Consumer(
        client_config(
            kafka,
            **{
                "group.id": f"console-{purpose}-{uuid.uuid4().hex}",  # never commits
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                **extra,
            },
        )
    )


class TopicMirror:
    """The latest value per key of `topics`, kept up to date by a thread."""

    def __init__(self, bootstrap: Kafka, topics: list[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self._values: dict[str, dict[bytes, bytes]] = {topic: {} for topic in topics}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="console-mirror", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        with self._lock:
            if value is None:  # tombstone
                self._values[topic].pop(key, None)
            else:
                self._values[topic][key] = value

    def items(self, topic: str) -> list[tuple[bytes, bytes]]:
        with self._lock:
            return list(self._values[topic].items())

    def get(self, topic: str, key: bytes) -> bytes | None:
        with self._lock:
            return self._values[topic].get(key)

    def _assignment(self, consumer: Consumer) -> list[TopicPartition]:
        """Every partition of every topic, from the beginning; waits for missing topics."""
        while not self._stop.is_set():
            try:
                listed = consumer.list_topics(timeout=5).topics
            except Exception as exc:
                log.warning("console mirror: cluster not readable yet (%s)", exc)
                self._stop.wait(1)
                continue
            missing = [t for t in self.topics if t not in listed or not listed[t].partitions]
            if not missing:
                return [
                    TopicPartition(topic, p, OFFSET_BEGINNING)
                    for topic in self.topics
                    for p in sorted(listed[topic].partitions)
                ]
            log.info("console mirror: waiting for topics %s", ", ".join(missing))
            self._stop.wait(2)
        return []

    def _run(self) -> None:
        consumer = _consumer(self.bootstrap, "mirror")
        try:
            assignment = self._assignment(consumer)
            if not assignment:
                return
            consumer.assign(assignment)
            while not self._stop.is_set():
                message = poll_record(consumer, 0.2, log, "console mirror")
                if message is not None:
                    self.apply(message.topic() or "", message.key(), message.value())
        finally:
            consumer.close()


@dataclass(frozen=True)
class Record:
    """A record as read: where it sits, when it was written, its key and value."""

    source: Source
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


def tail(bootstrap: Kafka, topic: str, per_partition: int, timeout: float = 5.0) -> list[Record]:
    """At most the last `per_partition` records of each partition of `topic`, newest
    first; what could be read within `timeout` s. A missing topic has no records."""
    consumer = _consumer(bootstrap, "tail", **{"enable.partition.eof": True})
    try:
        deadline = time.monotonic() + timeout
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []
        ends: dict[int, int] = {}
        start: list[TopicPartition] = []
        for partition in sorted(metadata.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            if high > low:
                ends[partition] = high
                start.append(TopicPartition(topic, partition, max(low, high - per_partition)))
        records: list[Record] = []
        if start:
            consumer.assign(start)
        while ends and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            partition, offset = message.partition() or 0, message.offset() or 0
            if message.error() is None:
                at = Source(topic, partition, offset)
                _, stamp = message.timestamp()
                records.append(Record(at, stamp, message.key(), message.value()))
            if offset + 1 >= ends.get(partition, 0):  # read to the end (or at EOF)
                ends.pop(partition, None)
        return sorted(records, key=lambda r: (r.timestamp_ms, r.source.offset), reverse=True)
    finally:
        consumer.close()


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group has committed nothing on it
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


def group_lag(
    bootstrap: Kafka, group: str, topics: list[str], timeout: float = 5.0
) -> list[PartitionLag]:
    """Committed offset and end offset of every partition of `topics` for `group`."""
    admin = AdminClient(client_config(bootstrap))
    consumer = _consumer(bootstrap, "lag")
    try:
        listed = consumer.list_topics(timeout=timeout).topics
        wanted = [
            TopicPartition(topic, p)
            for topic in topics
            if topic in listed
            for p in sorted(listed[topic].partitions)
        ]
        if not wanted:
            return []
        request = [ConsumerGroupTopicPartitions(group, wanted)]
        answer = admin.list_consumer_group_offsets(request)[group].result(timeout=timeout)
        committed = {
            (tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions if tp.offset >= 0
        }
        out = []
        for tp in wanted:
            _, end = consumer.get_watermark_offsets(tp, timeout=timeout)
            out.append(
                PartitionLag(tp.topic, tp.partition, committed.get((tp.topic, tp.partition)), end)
            )
        return out
    finally:
        consumer.close()
