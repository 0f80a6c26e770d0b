"""Messages of the measurements topic, and a producer helper for Python producers.

A message is one measurement, or a batch envelope `{"measurements": [...]}` of
measurements that all live on the same partition (same account, or accounts whose
murmur2 hash lands on the same partition). Batching amortizes the worker's
per-message cost; single-measurement messages stay valid for any producer.

The key is the account code (of the first measurement, for an envelope): any producer
keying by account with the Java client's murmur2 (confluent-kafka:
`partitioner=murmur2_random`) puts it where the worker expects it.

`MeasurementProducer` does what the HTTP ingest API and file upload do: group
measurements by `partition_for(account)`, publish one envelope per partition (at most
`batch_size` measurements), acks=all, idempotent.

Numbers are written exactly (`encode_json`): an int of any size or a `Decimal` becomes
the same JSON number (`Decimal("0.1")` is `0.1`, 2**64 is 18446744073709551616); a float
is written as its shortest repr. The worker reads them back exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message, Producer

from connectors.kafka.producer import DeliveryError, new_producer
from streams.kafka_access import Kafka
from streams.partitioning import partition_for
from streams.schemas.numbers import encode_json

# Stay well below the broker's default max.message.bytes (1 MiB): an envelope is
# flushed before it would grow past this, whatever its count.
MAX_ENVELOPE_BYTES = 512_000
_HEAD = b'{"measurements":['
_TAIL = b"]}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message for the measurements topic, bound for an explicit partition."""

    partition: int
    key: bytes
    value: bytes
    count: int


def account_of(measurement: Mapping[str, Any]) -> str:
    account = measurement.get("account")
    if type(account) is not str or not account:
        raise ValueError("a measurement needs an 'account' (a non-empty string)")
    return account


def encode_measurement(measurement: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """A single-measurement message: (key = account code, value = the measurement as JSON)."""
    return account_of(measurement).encode(), encode_json(measurement)


def encode_envelope(encoded: Iterable[bytes]) -> bytes:
    """The envelope around measurements that are each already JSON-encoded objects."""
    return _HEAD + b",".join(encoded) + _TAIL


def envelopes_by_partition(
    measurements: Iterable[Mapping[str, Any]], partitions: int
) -> list[Envelope]:
    """One envelope per partition for a batch that fits one message (the ingest API's case)."""
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for measurement in measurements:
        groups.setdefault(partition_for(measurement["account"], partitions), []).append(measurement)
    return [
        Envelope(
            partition,
            group[0]["account"].encode(),
            encode_json({"measurements": group}),
            len(group),
        )
        for partition, group in groups.items()
    ]


class PartitionBatcher:
    """Buffers encoded measurements per partition; hands out full envelopes.

    An envelope is full at `batch_size` measurements, or before it would exceed
    `max_bytes` (a single larger measurement still goes out, alone).
    """

    def __init__(
        self, partitions: int, batch_size: int = 500, max_bytes: int = MAX_ENVELOPE_BYTES
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.partitions = partitions
        self.batch_size = batch_size
        self.max_bytes = max_bytes
        self._items: dict[int, list[bytes]] = {}
        self._keys: dict[int, bytes] = {}
        self._sizes: dict[int, int] = {}

    def add(self, account: str, encoded: bytes) -> Envelope | None:
        """Buffer one measurement; return an envelope if its partition's batch is ready."""
        partition = partition_for(account, self.partitions)
        ready = None
        items = self._items.get(partition)
        if items and self._sizes[partition] + len(encoded) + 1 > self.max_bytes:
            ready = self._take(partition)
            items = None
        if not items:
            items = self._items[partition] = []
            self._keys[partition] = account.encode()
            self._sizes[partition] = len(_HEAD) + len(_TAIL) - 1  # n items, n - 1 commas
        items.append(encoded)
        self._sizes[partition] += len(encoded) + 1
        if ready is None and len(items) >= self.batch_size:
            ready = self._take(partition)
        return ready

    def drain(self) -> list[Envelope]:
        """Every partially filled envelope (the end of a batch or file)."""
        return [self._take(partition) for partition in list(self._items) if self._items[partition]]

    @property
    def buffered(self) -> int:
        return sum(len(items) for items in self._items.values())

    def _take(self, partition: int) -> Envelope:
        items = self._items.pop(partition)
        return Envelope(partition, self._keys.pop(partition), encode_envelope(items), len(items))


class MeasurementProducer:
    """Publish measurements the way the ingest API does: batch envelopes per partition.

    `send` buffers; an envelope is produced when its partition holds `batch_size`
    measurements; `flush` produces the rest and waits until Kafka acknowledged
    everything (raising `DeliveryError` otherwise). Measurements are not validated
    here: the usage agent checks them against their meter and dead-letters bad ones.

        with MeasurementProducer("localhost:9092", "measurements", partitions=6) as out:
            out.send({"uid": "u1", "meter": "api", "account": "acme", "ts": "...", ...})
    """

    def __init__(
        self,
        kafka: Kafka,
        topic: str,
        partitions: int,
        batch_size: int = 100,
        *,
        producer: Producer | None = None,
    ) -> None:
        self.topic = topic
        self._batcher = PartitionBatcher(partitions, batch_size)
        self._producer = producer if producer is not None else new_producer(kafka)
        self._failures: list[str] = []

    def send(self, measurement: Mapping[str, Any]) -> None:
        envelope = self._batcher.add(account_of(measurement), encode_json(measurement))
        if envelope is not None:
            self._produce(envelope)

    def flush(self, timeout: float = 30.0) -> None:
        """Produce every buffered envelope and wait for Kafka's acknowledgement of all sends."""
        for envelope in self._batcher.drain():
            self._produce(envelope)
        remaining = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if remaining:
            raise DeliveryError(f"{remaining} messages not acknowledged within {timeout:g}s")
        if failures:
            raise DeliveryError(f"{len(failures)} messages failed: {failures[0]}")

    def __enter__(self) -> MeasurementProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()

    def _produce(self, envelope: Envelope) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=envelope.value,
                    key=envelope.key,
                    partition=envelope.partition,
                    on_delivery=self._delivered,
                )
                break
            except BufferError:  # local queue full: serve callbacks, then retry
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _delivered(self, error: Any, message: Message) -> None:
        if error is not None:
            self._failures.append(str(error))
