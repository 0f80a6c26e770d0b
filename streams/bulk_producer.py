"""The worker's bulk producer: many records at once on confluent-kafka (librdkafka).

faust sends through aiokafka at ~80 us a record on the event loop (its buffer, the
accumulator, one future and task each), and builds, checksums and compresses its batches
there too, holding the GIL. A bill run writes three records per bill (the bill, two table
changelogs), so a run of 10,000 accounts spent most of its time there; the usage agent's
deltas are megabytes a batch. Here `produce()` costs a few us and compression and sending
run on librdkafka's threads.

Delivery is awaited, never trusted (DESIGN.md, "Do not trust faust's commit"): records
produced together form a `Batch` whose `wait()` returns once Kafka answered each of
them. Delivery reports are served by `poll()` on the event loop (a task polls while
anything is in flight), so a batch's bookkeeping needs no lock. A record Kafka refused
is in `Batch.failed`; `deliver()` sends such records again with back-off, without end,
like `streams.delivery.deliver`. Batches in flight count as sends in the worker's
watchdog (`/healthz` stalls, `meterline_worker_sends_pending`); the worker flushes the
producer when it stops.

Producer settings are the project's (idempotent, acks=all, lz4) and so is the
partitioner: `murmur2_random` hashes a key as faust and the Java client do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.delivery import Record, backoff
from streams.kafka_access import Kafka, client_config

log = logging.getLogger(__name__)

# faust/aiokafka and the Java client hash keys with murmur2; confluent-kafka's default
# (consistent_random, CRC32) does not agree, which silently breaks co-partitioning.
PARTITIONER = "murmur2_random"
POLL_EVERY_S = 0.001  # how often delivery reports are served while records are in flight
FLUSH_TIMEOUT_S = 30.0


def producer_config(kafka: Kafka, **extra: Any) -> dict[str, Any]:
    """librdkafka settings of every meterline producer: never lose a write, agree with
    faust on partitions."""
    config = client_config(kafka)
    config |= {
        "partitioner": PARTITIONER,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": 30_000,
    }
    config.update(extra)
    return config


class Watch(Protocol):
    """Where batches in flight are counted (`streams.watchdog.Watchdog`)."""

    def send_started(self, topic: str) -> Any: ...

    def send_finished(self, send: Any) -> None: ...


class Refused(NamedTuple):
    """A record Kafka did not take, and why."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    error: KafkaException


class Batch:
    """Records produced together: how many Kafka has not answered, which it refused,
    and the last offset written per (topic, partition)."""

    __slots__ = ("_done", "_send", "_watch", "failed", "topic", "waiting", "written")

    def __init__(self, watch: Watch | None, topic: str) -> None:
        self.topic = topic
        self.waiting = 0
        self.failed: list[Refused] = []
        self.written: dict[tuple[str, int], int] = {}
        self._done: asyncio.Future[None] | None = None
        self._watch = watch
        self._send = watch.send_started(topic) if watch is not None else None

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        """librdkafka's delivery report of one record (served on the event loop)."""
        self.waiting -= 1
        partition = message.partition()
        if error is not None:
            where = partition if partition is not None and partition >= 0 else None
            refused = Refused(
                message.topic() or "", message.key(), message.value(), where, KafkaException(error)
            )
            self.failed.append(refused)
        else:
            where_to = (message.topic() or "", partition or 0)
            offset = message.offset() or 0
            if offset > self.written.get(where_to, -1):
                self.written[where_to] = offset
        if self.waiting == 0 and self._done is not None and not self._done.done():
            self._done.set_result(None)

    def refused(self, topic: str, record: Record, error: KafkaException) -> None:
        """A record librdkafka would not even queue (e.g. larger than the producer takes)."""
        key, value, partition = record
        self.failed.append(Refused(topic, key, value, partition, error))

    @property
    def awaited(self) -> bool:
        """Whether somebody waits for the batch (`wait()`)."""
        return self._done is not None

    async def wait(self) -> None:
        """Return once Kafka answered every record of the batch (see `failed`)."""
        if self.waiting:
            self._done = asyncio.get_running_loop().create_future()
            await self._done
        if self._watch is not None:
            self._watch.send_finished(self._send)


class BulkProducer:
    """One librdkafka producer for the worker's bulk writes (bills and the billing tables;
    the usage log has one of its own)."""

    def __init__(
        self,
        kafka: Kafka,
        watch: Watch | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
        factory: Callable[[dict[str, Any]], Any] = Producer,
    ) -> None:
        self.config = producer_config(kafka, **(extra or {}))
        self.watch = watch
        self._factory = factory
        self._producer: Any = None
        self._wake: asyncio.Event | None = None
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Connect (librdkafka connects in the background) and serve delivery reports."""
        if self._producer is None:
            self._producer = self._factory(self.config)
            self._wake = asyncio.Event()
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    @property
    def pending(self) -> int:
        """Records produced and not yet answered by Kafka."""
        return 0 if self._producer is None else len(self._producer)

    def batch(self, topic: str) -> Batch:
        """A new batch; `topic` names it in the watchdog."""
        return Batch(self.watch, topic)

    def produce(
        self,
        batch: Batch,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
    ) -> None:
        """Queue one record; its delivery report lands in `batch`."""
        self.start()
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": batch.delivered}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
            except BufferError:  # librdkafka's queue is full: let it drain
                self._producer.poll(0.01)
                continue
            except KafkaException as exc:
                batch.refused(topic, (key, value, partition), exc)
                return
            break
        batch.waiting += 1
        assert self._wake is not None
        self._wake.set()

    def send(self, topic: str, records: Sequence[Record]) -> Batch:
        """Queue `records` for `topic` as one batch, without waiting (see `settle`)."""
        batch = self.batch(topic)
        for key, value, partition in records:
            self.produce(batch, topic, key, value, partition)
        return batch

    async def settle(self, batch: Batch) -> None:
        """Return once Kafka acknowledged every record of `batch` (from `send`); a refused
        record is sent again with back-off, without end."""
        attempt = 0
        while True:
            await batch.wait()
            if not batch.failed:
                return
            delay = backoff(attempt)
            attempt += 1
            first = batch.failed[0]
            log.warning(
                "%d sends to %s failed (first: key %r, %s); sending them again in %.1f s",
                len(batch.failed),
                batch.topic,
                first.key,
                first.error,
                delay,
            )
            await asyncio.sleep(delay)
            batch = self.send(
                batch.topic,
                [(refused.key, refused.value, refused.partition) for refused in batch.failed],
            )

    async def deliver(self, topic: str, records: Sequence[Record]) -> None:
        """Send `records` to `topic` and return once Kafka acknowledged every one; a
        refused record is sent again with back-off, without end."""
        await self.settle(self.send(topic, records))

    async def _poll(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            while len(self._producer):
                self._producer.poll(0)
                await asyncio.sleep(POLL_EVERY_S)
            self._wake.clear()

    async def close(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Wait (up to `timeout`) until Kafka answered every record produced, then stop
        serving reports. Reports are served here, on the loop, as while running."""
        if self._producer is None:
            return
        deadline = time.monotonic() + timeout
        while len(self._producer) and time.monotonic() < deadline:
            self._producer.poll(0)
            await asyncio.sleep(POLL_EVERY_S)
        left = len(self._producer)
        if left:
            log.error("%d records not acknowledged by Kafka when the producer closed", left)
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        self._producer = None
