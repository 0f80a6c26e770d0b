"""The sink's ledger: which Stripe objects stand for each bill, on the compacted
`stripe.sync` topic (key bill id, value the latest `LedgerEntry`).

The topic is keyed by bill id while `bills` is keyed by account code, so a bill's entry
can sit on any ledger partition: the sink reads the whole topic at start-up and catches
up to its end on every assignment (another process may have written entries for the
partitions it just received). Its own entries it applies once Kafka acknowledged them.

Bounded by the assignment: a sink keeps only the entries of bills whose account lives
on a `bills` partition it owns (`Ledger.own`); entries of a partition it loses are
dropped, and when it receives a partition it did not own, it reads the ledger from the
beginning again (`LedgerReader.rewind`), keeping that partition's entries.
"""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)
from pydantic import Field, ValidationError

from connectors.kafka.readiness import watermark_offsets
from connectors.stripe_sink.policy import Mode
from streams.kafka_access import Kafka, client_config
from streams.partitioning import partition_for
from streams.schemas.bill import BillStatus
from streams.schemas.catalog import Frozen
from streams.schemas.errors import error_text
from streams.sources import Source

log = logging.getLogger(__name__)


class LedgerItem(Frozen):
    """One bill line's Stripe invoice item, as Stripe last confirmed it."""

    itemId: str
    amount: int = Field(description="Stripe's integer amount (minor units)")
    currency: str
    description: str
    periodStart: int
    periodEnd: int
    editable: bool = Field(
        default=True, description="False once Stripe refused a change (its invoice is final)"
    )


class LedgerEntry(Frozen):
    billId: str
    accountCode: str
    version: int = Field(description="Last bill version synced (or settled with conflicts)")
    status: BillStatus
    mode: Mode
    invoiceId: str | None = None
    items: dict[str, LedgerItem] = Field(default_factory=dict, description="By bill line id")
    finalized: bool = False
    conflicts: dict[str, str] = Field(
        default_factory=dict, description="Line id → why Stripe was not changed, this version"
    )

    def total(self) -> int:
        return sum(item.amount for item in self.items.values())


class Ledger:
    """The latest entry per bill, in memory: of every bill, or once `own` was called,
    of the bills on the owned `bills` partitions (of `partitions`) only."""

    def __init__(self, partitions: int | None = None) -> None:
        self.entries: dict[str, LedgerEntry] = {}
        self.partitions = partitions
        self.owned: frozenset[int] | None = None  # None: every bill

    def own(self, owned: set[int]) -> set[int]:
        """Keep only the bills of the `owned` partitions from now on; drop the others.
        Returns the partitions newly owned (their entries must be read again); none the
        first time, when every entry was kept."""
        before = self.owned if self.owned is not None else frozenset(owned)
        self.owned = frozenset(owned)
        for bill_id in [b for b, e in self.entries.items() if not self.keeps(e)]:
            del self.entries[bill_id]
        return set(owned) - before

    def keeps(self, entry: LedgerEntry) -> bool:
        if self.owned is None or self.partitions is None:
            return True
        return partition_for(entry.accountCode, self.partitions) in self.owned

    def get(self, bill_id: str) -> LedgerEntry | None:
        return self.entries.get(bill_id)

    def apply(self, entry: LedgerEntry) -> None:
        """Keep `entry` unless a later version of the bill is already known, or its bill
        is not on an owned partition."""
        if not self.keeps(entry):
            return
        known = self.entries.get(entry.billId)
        if known is None or entry.version >= known.version:
            self.entries[entry.billId] = entry

    def apply_record(self, key: bytes | None, value: bytes | None, where: str) -> None:
        if value is None:  # tombstone
            self.entries.pop((key or b"").decode(), None)
            return
        try:
            self.apply(LedgerEntry.model_validate_json(value))
        except ValidationError as error:
            log.error(
                "ignoring unreadable ledger record %s: %s", where, error_text(error, whole="value")
            )


class LedgerReader:
    """Reads `stripe.sync` from the beginning and, on each `catch_up`, up to its end."""

    def __init__(self, kafka: Kafka, topic: str, ledger: Ledger) -> None:
        self.topic = topic
        self.ledger = ledger
        self.consumer = Consumer(
            client_config(
                kafka,
                **{
                    "group.id": f"stripe-sync-reader-{uuid.uuid4().hex}",  # never commits
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                },
            )
        )
        self.assigned = False
        self.records = 0

    def catch_up(self, timeout: float = 60.0) -> int:
        """Apply every record written before now; return how many were read."""
        deadline = time.monotonic() + timeout
        if not self.assigned:
            metadata = self.consumer.list_topics(self.topic, timeout=timeout).topics[self.topic]
            if metadata.error is not None:
                raise RuntimeError(f"cannot read ledger topic {self.topic}: {metadata.error}")
            partitions = sorted(metadata.partitions)
            self.consumer.assign(
                [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions]
            )
            self.assigned = True
        behind = self._behind(deadline)
        read = 0
        while behind:
            message = self.consumer.poll(max(deadline - time.monotonic(), 0.0))
            if message is None:
                raise TimeoutError(f"ledger {self.topic} not read to its end within {timeout}s")
            read += self._take(message, behind)
        self.records += read
        return read

    def rewind(self) -> None:
        """Read from the beginning again at the next `catch_up`."""
        if self.assigned:
            partitions = self.consumer.assignment()
            self.consumer.assign(
                [TopicPartition(self.topic, tp.partition, OFFSET_BEGINNING) for tp in partitions]
            )

    def _behind(self, deadline: float) -> dict[int, int]:
        """Partitions whose position is before their end → that end (high watermark)."""
        behind = {}
        for tp in self.consumer.assignment():
            low, high = watermark_offsets(self.consumer, tp, deadline)
            position = self.consumer.position([tp])[0].offset
            start = position if position >= 0 else low
            if start < high:
                behind[tp.partition] = high
        return behind

    def _take(self, message: Message, behind: dict[int, int]) -> int:
        partition = message.partition() or 0
        error = message.error()
        if error is not None:
            # An end-of-partition event can be left over from an earlier catch-up: it ends
            # this one only if it is at (or past) the end this one aims for.
            if error.code() == KafkaError._PARTITION_EOF:
                if (message.offset() or 0) >= behind.get(partition, 0):
                    behind.pop(partition, None)
            else:
                log.warning("ledger read error on %s[%s]: %s", self.topic, partition, error)
            return 0
        offset = message.offset() or 0
        where = Source(self.topic, partition, offset)
        self.ledger.apply_record(message.key(), message.value(), str(where))
        if offset + 1 >= behind.get(partition, 0):
            behind.pop(partition, None)
        return 1

    def close(self) -> None:
        self.consumer.close()
