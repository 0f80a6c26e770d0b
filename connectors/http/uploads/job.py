"""An upload job: validates items one by one and publishes the valid ones in batch
envelopes per partition, with back-pressure on Kafka's acknowledgements."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from connectors.http.edge import (
    ACK_TIMEOUT_S,
    MEASUREMENTS_RETRY,
    await_acks,
    not_acknowledged,
)
from connectors.http.uploads.parsers import BadUpload, Item, Unreadable
from connectors.http.validation import measurement_errors
from connectors.kafka.measurements import Envelope, PartitionBatcher
from connectors.kafka.producer import AsyncProducer
from streams.schemas.numbers import EncodeError, encode_json

BATCH_SIZE = 500
MAX_ERRORS = 100
MAX_JOBS = 1000
MAX_IN_FLIGHT = 32  # envelopes produced but not yet acknowledged before reading pauses


class UploadJob:
    """Validates items one by one and publishes the valid ones in envelopes per partition."""

    def __init__(
        self,
        producer: AsyncProducer,
        topic: str,
        partitions: int,
        *,
        batch_size: int = BATCH_SIZE,
        ack_timeout_s: float = ACK_TIMEOUT_S,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._batcher = PartitionBatcher(partitions, batch_size)
        self._ack_timeout_s = ack_timeout_s
        self._in_flight: list[tuple[asyncio.Future[Any], int]] = []
        self.read = 0
        self.accepted = 0  # acknowledged by Kafka
        self.rejected = 0
        self.errors: list[dict[str, Any]] = []

    def take(self, item: Item) -> None:
        self.read += 1
        if isinstance(item, Unreadable):
            self._reject(item.line, item.index, [{"field": "measurement", "reason": item.reason}])
            return
        problems = measurement_errors(item.value)
        encoded = item.raw
        if not problems and encoded is None:
            try:
                encoded = encode_json(item.value)
            except (EncodeError, ValueError) as exc:  # e.g. a lone surrogate in a string
                problems = [{"field": "measurement", "reason": f"cannot be encoded: {exc}"}]
        if problems or encoded is None:
            self._reject(item.line, item.index, problems)
            return
        envelope = self._batcher.add(item.value["account"], encoded)
        if envelope is not None:
            self._send(envelope)

    def stop(self, error: BadUpload) -> None:
        """The rest of the file cannot be read: report that as the job's last error."""
        self.rejected += 1
        last = {
            "line": error.line,
            "field": "measurement",
            "reason": f"{error.reason}; the rest of the file was not read",
        }
        self.errors[MAX_ERRORS - 1 :] = [last]  # always listed, even past the first 100

    async def settle(self) -> None:
        """Wait for acknowledgements once too many envelopes are in flight (back-pressure)."""
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            await self._acknowledged()

    async def finish(self) -> None:
        for envelope in self._batcher.drain():
            self._send(envelope)
        await self._acknowledged()

    async def abandon(self) -> None:
        """Publish nothing more; wait for what is in flight (413 mid-stream)."""
        self._batcher = PartitionBatcher(self._batcher.partitions, self._batcher.batch_size)
        await self._acknowledged()

    def result(self, job_id: str) -> dict[str, Any]:
        return {
            "jobId": job_id,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "errors": self.errors,
        }

    def _send(self, envelope: Envelope) -> None:
        future = self._producer.produce(
            self._topic, envelope.value, key=envelope.key, partition=envelope.partition
        )
        self._in_flight.append((future, envelope.count))

    async def _acknowledged(self) -> None:
        in_flight, self._in_flight = self._in_flight, []
        problem = await await_acks([future for future, _ in in_flight], self._ack_timeout_s)
        if problem is not None:
            raise not_acknowledged("the measurements", problem, MEASUREMENTS_RETRY)
        self.accepted += sum(count for _, count in in_flight)

    def _reject(self, line: int, index: int | None, problems: list[dict[str, str]]) -> None:
        self.rejected += 1
        for problem in problems:
            if len(self.errors) >= MAX_ERRORS:
                return
            where: dict[str, Any] = (
                {"line": line} if index is None else {"line": line, "index": index}
            )
            self.errors.append({**where, **problem})


class JobStore:
    """Results of the last `limit` upload jobs of this process."""

    def __init__(self, limit: int = MAX_JOBS) -> None:
        self.limit = limit
        self._jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def put(self, result: dict[str, Any]) -> None:
        self._jobs[result["jobId"]] = result
        self._jobs.move_to_end(result["jobId"])
        while len(self._jobs) > self.limit:
            self._jobs.popitem(last=False)

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self._jobs.get(job_id)
