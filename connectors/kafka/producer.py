"""confluent-kafka producers that never lose a write and agree with faust on partitions."""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaException, Message, Producer

from streams.bulk_producer import PARTITIONER, producer_config
from streams.kafka_access import Kafka

__all__ = ["PARTITIONER", "AsyncProducer", "DeliveryError", "new_producer", "producer_config"]


def new_producer(kafka: Kafka, **extra: Any) -> Producer:
    return Producer(producer_config(kafka, **extra))


class DeliveryError(RuntimeError):
    """Kafka did not acknowledge a write."""


class AsyncProducer:
    """Awaitable produce: the future resolves when Kafka acknowledged (acks=all) the write."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._closed = False
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while not self._closed:
            # Delivery callbacks run inside poll(); keep it short so the loop stays free.
            served = self._producer.poll(0)
            await asyncio.sleep(0.001 if served else 0.005)

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Message]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()

        def delivered(error: Any, message: Message) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(DeliveryError(str(error)))
            else:
                future.set_result(message)

        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": delivered}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:
                self._producer.poll(0.01)
            except KafkaException as exc:
                future.set_exception(DeliveryError(str(exc)))
                break
        return future

    def flush(self, timeout: float = 10.0) -> int:
        return int(self._producer.flush(timeout))

    async def close(self, timeout: float = 10.0) -> None:
        self._closed = True
        if self._poller is not None:
            await self._poller
        await asyncio.get_running_loop().run_in_executor(None, self._producer.flush, timeout)
