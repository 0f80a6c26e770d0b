"""Bulk intake of `measurements`: whole fetches handed to the usage loop, not one event
at a time.

faust hands every message to an agent through its stream machinery: the fetch loop
awaits each message's delivery, the conductor decodes it into an event and queues it,
the stream reports it to the sensors and yields it. That costs ~100 µs per message
whatever the message holds, which bounded the worker at a few thousand
single-measurement messages per second while the usage engine folds one in ~5 µs.

With the bulk intake (`METERLINE_USAGE_INTAKE=bulk`, the default), the worker's
consumer (`streams.commits.InOrderConsumer`) takes the records of `measurements` out of
each fetch, as lists per partition, and puts them here; the usage loop takes them in
batches. Everything else stays faust's: the group, the assignment co-partitioned with
the usage log, table recovery before a partition's measurements are read, the commit
timer. Offsets: a batch's partitions are marked done (`Done`) once Kafka acknowledged
its usage delta, in the order batches were taken, and the consumer commits those.

A rebalance revokes every partition first (faust's eager protocol): the intake then
starts a new epoch (batches taken before it are dropped unprocessed, their messages are
read again from the committed offset), and the consumer waits for the batches in
flight (`drain`) before the partitions go, so no usage delta of this worker lands in a
log after its new owner read it. Back-pressure: while more than `high` messages (or
`high_bytes` of values) wait, the partitions are left out of the fetches; below `low`
(and `low_bytes`), they come back.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from faust.types import TP


class Record(Protocol):
    """A Kafka record as the consumer fetched it (aiokafka's ConsumerRecord)."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass
class Fetched:
    """Records of one partition, in offset order, from one fetch."""

    tp: TP
    records: Sequence[Record]


@dataclass
class Taken:
    """A batch for the usage loop: fetched records of one epoch, in fetch order."""

    epoch: int
    parts: list[Fetched]

    @property
    def messages(self) -> int:
        return sum(len(part.records) for part in self.parts)

    def ends(self) -> dict[TP, int]:
        """Per partition, the offset after the last record taken."""
        return {part.tp: part.records[-1].offset + 1 for part in self.parts if part.records}

    def starts(self) -> dict[TP, int]:
        out: dict[TP, int] = {}
        for part in self.parts:
            if part.records:
                out.setdefault(part.tp, part.records[0].offset)
        return out


def _size(records: Sequence[Record]) -> int:
    return sum(len(record.value) for record in records if record.value is not None)


async def _nothing() -> None:
    return None


@dataclass
class BulkIntake:
    """Fetched records of `topic`, waiting for the usage loop."""

    topic: str
    high: int  # pause the partitions above this many waiting messages
    low: int  # and fetch again below this many
    # the same in bytes of record values: what waits is held in memory
    high_bytes: int = 32 * 1024 * 1024
    low_bytes: int = 16 * 1024 * 1024
    pause: Callable[[TP], None] = lambda tp: None
    resume: Callable[[TP], None] = lambda tp: None
    # awaited when partitions are revoked: the batches in flight (set by the usage loop)
    drain: Callable[[], Awaitable[None]] = _nothing
    epoch: int = 0
    waiting: int = 0  # messages in `parts`
    waiting_bytes: int = 0  # their values' bytes
    parts: deque[Fetched] = field(default_factory=deque)
    paused: set[TP] = field(default_factory=set)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, tp: TP, records: Sequence[Any]) -> None:
        """Records of `tp` fetched by the consumer (called on the event loop)."""
        if not records:
            return
        self.parts.append(Fetched(tp, records))
        self.waiting += len(records)
        self.waiting_bytes += _size(records)
        self._ready.set()
        if (self.waiting > self.high or self.waiting_bytes > self.high_bytes) and (
            tp not in self.paused
        ):
            self.paused.add(tp)
            self.pause(tp)

    async def take(self, max_messages: int) -> Taken:
        """Records waiting now: at least one, at most `max_messages`, an equal share of
        each partition that has some (so a batch spreads over the partitions, which the
        usage engine folds in parallel), each partition's in offset order."""
        while not self.parts:
            self._ready.clear()
            await self._ready.wait()
        queues: dict[TP, deque[Fetched]] = {}
        for part in self.parts:
            queues.setdefault(part.tp, deque()).append(part)
        parts: list[Fetched] = []
        room = max_messages
        while room > 0 and queues:
            share = max(1, room // len(queues))
            for tp in list(queues):
                queue, wanted = queues[tp], min(share, room)
                while wanted > 0 and queue:
                    part = queue[0]
                    if len(part.records) <= wanted:
                        parts.append(queue.popleft())
                        took = len(part.records)
                    else:  # a fetch larger than the share: split it
                        parts.append(Fetched(tp, part.records[:wanted]))
                        queue[0] = Fetched(tp, part.records[wanted:])
                        took = wanted
                    wanted, room = wanted - took, room - took
                if not queue:
                    del queues[tp]
                if room == 0:
                    break
        self.parts = deque(part for queue in queues.values() for part in queue)
        self.waiting -= max_messages - room
        self.waiting_bytes -= sum(_size(part.records) for part in parts)
        self._resume_below_low()
        return Taken(self.epoch, parts)

    def current(self, taken: Taken) -> bool:
        """Whether `taken` belongs to the partitions' current assignment."""
        return taken.epoch == self.epoch

    async def revoke(self, partitions: Iterable[TP]) -> None:
        """Partitions are being revoked: drop what waits (it is read again from the
        committed offset), start a new epoch, and wait for the batches in flight."""
        self.epoch += 1
        self.parts.clear()
        self.waiting = self.waiting_bytes = 0
        self._resume_below_low()
        await self.drain()

    def _resume_below_low(self) -> None:
        if self.paused and self.waiting < self.low and self.waiting_bytes < self.low_bytes:
            for tp in sorted(self.paused):
                self.resume(tp)
            self.paused.clear()
