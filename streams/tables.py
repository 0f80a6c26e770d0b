"""Tables whose every key belongs to one account, stored on that account's partition.

faust writes a table change to the changelog partition of the *event being processed*.
meterline derives it from the key instead: a key is `<account>` or `<account>|<rest>`,
and its changelog partition is the account's murmur2 partition, the same partition the
account's measurements, Stripe events, bill commands and bills live on. So:

- writes can happen from a batch (`take_events`) that spans several partitions, and
  from timers, without landing in the wrong partition;
- the worker that owns an account's partition owns all of its state, after any
  rebalance, and faust's table routing (`table_route`) finds it by the account code.

An account code may hold any character, `|` and `%` included: the account part of a
key escapes those two (`%7C`, `%25`), so splitting a key always gives back the code
and the partition it was written to.

Durability: faust buffers changelog writes and its commit does not wait for them (see
DESIGN.md). An `AccountTable` keeps the delivery future of every write; an agent awaits
`confirm()` before its events are acknowledged, so an offset is committed only after
the state it stands for is on the broker.

A table given a `BulkProducer` (`use_producer`) writes its changelog through it
instead of faust's producer (a few us a write instead of ~80); `confirm()` is the same
for both, and so is recovery: the rocksdb store learns the changelog offset it holds
once Kafka acknowledged it, as faust's `_on_changelog_sent` does.

Keys and values are bytes, raw on the wire (values are orjson documents).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast
from urllib.parse import unquote

import faust
from faust.types import TP, EventT, FutureMessage

from streams.bulk_producer import Batch, BulkProducer, Watch
from streams.delivery import backoff
from streams.kafka_access import Kafka
from streams.partitioning import partition_for

log = logging.getLogger(__name__)

SEPARATOR = "|"


def _escape(account: str) -> str:
    return account.replace("%", "%25").replace(SEPARATOR, "%7C")


def split_key(key: str | bytes) -> tuple[str, str | None]:
    """(account code, the rest after the separator or None) of a table key."""
    text = key.decode() if isinstance(key, bytes) else key
    escaped, separator, rest = text.partition(SEPARATOR)
    return unquote(escaped), (rest if separator else None)


def account_of(key: str | bytes) -> str:
    return split_key(key)[0]


def table_key(account: str, *parts: object) -> str:
    return SEPARATOR.join((_escape(account), *map(str, parts)))


def account_key(account: str) -> bytes:
    """The key of an account's own entry (account, bill index): its escaped code."""
    return _escape(account).encode()


class Written:
    """What `send_changelog` returns for a write through a BulkProducer: faust reads
    only `.message.partition` of it (`Table.on_key_set`)."""

    __slots__ = ("partition",)

    def __init__(self, partition: int) -> None:
        self.partition = partition

    @property
    def message(self) -> Written:
        return self


class AccountTable(faust.Table):  # type: ignore[type-arg]
    """A faust Table partitioned by the account prefix of its keys."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unconfirmed: list[FutureMessage] = []
        self._bulk: BulkProducer | None = None
        self._batch: Batch | None = None  # writes through `_bulk` not yet confirmed
        self._confirming = asyncio.Lock()
        self._watchers: list[Callable[[str], None]] = []

    def partition_for_key(self, key: Any) -> int:
        return partition_for(account_of(key), self.partitions)

    # Reads go straight to the store: faust's own would tell its sensors of every key read
    # (which nothing here counts), a third of a read's time, and a bill run reads several
    # keys of every account. No default: a key the table does not hold is missing.

    def get(self, key: Any, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def watch(self, changed: Callable[[str], None]) -> None:
        """Call `changed(account)` whenever a key of `account` changes: written here, or
        read from the changelog (recovery, standby)."""
        self._watchers.append(changed)

    def use_producer(self, producer: BulkProducer) -> None:
        """Write the changelog through `producer` from now on."""
        self._bulk = producer

    @property
    def producer(self) -> BulkProducer | None:
        """The BulkProducer the changelog is written through (None: faust's producer)."""
        return self._bulk

    def send_changelog(self, partition: Any, key: Any, *args: Any, **kwargs: Any) -> FutureMessage:
        for changed in self._watchers:
            changed(account_of(key))
        if self._bulk is not None:
            value = args[0] if args else kwargs.get("value")
            return self._send_bulk(self._bulk, partition, key, value)
        future: FutureMessage = super().send_changelog(partition, key, *args, **kwargs)
        self._unconfirmed.append(future)
        return future

    def _send_bulk(
        self, producer: BulkProducer, partition: int | None, key: bytes, value: bytes | None
    ) -> FutureMessage:
        if partition is None:
            partition = self.partition_for_key(key)
        if self._batch is None:
            self._batch = producer.batch(self.changelog_topic.get_topic_name())
        producer.produce(self._batch, self.changelog_topic.get_topic_name(), key, value, partition)
        return cast(FutureMessage, Written(partition))

    def write(self, account: str, items: Mapping[bytes, bytes]) -> None:
        """Set keys of one account at once, as `table[key] = value` does for each of them
        (changelog, sensors, watchers), with the account's partition found and the
        watchers told once for the account instead of once per key. Every key must be
        `account`'s; this table never expires keys (it has no window)."""
        own = account_key(account)
        stray = [key for key in items if key != own and not key.startswith(own + b"|")]
        if stray:
            raise ValueError(f"keys {stray[:3]!r} are not keys of account {account!r}")
        if self._bulk is None:
            for key, value in items.items():
                self[key] = value
            return
        for changed in self._watchers:
            changed(account)
        partition = partition_for(account, self.partitions)
        for key, value in items.items():
            self._send_bulk(self._bulk, partition, key, value)
            self._sensor_on_set(self, key, value)
            self.data[key] = value

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        events = list(batch)
        super().apply_changelog_batch(events)
        for changed in self._watchers:
            for event in events:
                if event.message.key is not None:
                    changed(account_of(event.message.key))

    @property
    def unconfirmed(self) -> int:
        """Changelog writes not yet confirmed by `confirm()`."""
        batch = self._batch
        return len(self._unconfirmed) + (batch.waiting + len(batch.failed) if batch else 0)

    async def confirm(self) -> None:
        """Wait until Kafka acknowledged every changelog write made before this call.

        A write Kafka refused is sent again with the key's *current* value (a later
        write of the same key may have overtaken it), until the broker takes it. One
        caller at a time: a second caller (a timer beside the agent) waits for the first,
        whose loop covers every write made before either call.
        """
        async with self._confirming:
            if self._bulk is not None:
                await self._confirm_bulk()
            attempt = 0
            while self._unconfirmed:
                pending, self._unconfirmed = self._unconfirmed, []
                outcomes = await asyncio.gather(*pending, return_exceptions=True)
                failed = {
                    cast(bytes, future.message.key): error
                    for future, error in zip(pending, outcomes, strict=True)
                    if isinstance(error, BaseException)
                }
                if not failed:
                    continue
                delay = backoff(attempt)
                attempt += 1
                log.warning(
                    "%d changelog writes of table %s failed (first: %r); sending again in %.1f s",
                    len(failed),
                    self.name,
                    next(iter(failed.values())),
                    delay,
                )
                await asyncio.sleep(delay)
                self._send_again(failed)

    async def _confirm_bulk(self) -> None:
        attempt = 0
        while self._batch is not None:
            batch, self._batch = self._batch, None
            await batch.wait()
            for (topic, partition), offset in batch.written.items():
                # what faust's _on_changelog_sent does: the rocksdb store resumes
                # recovery after the offsets it holds (a no-op for the memory store)
                self.data.set_persisted_offset(TP(topic, partition), offset)
            if not batch.failed:
                continue
            delay = backoff(attempt)
            attempt += 1
            log.warning(
                "%d changelog writes of table %s failed (first: key %r, %s); again in %.1f s",
                len(batch.failed),
                self.name,
                batch.failed[0].key,
                batch.failed[0].error,
                delay,
            )
            await asyncio.sleep(delay)
            self._send_again(refused.key for refused in batch.failed)

    def _send_again(self, keys: Iterable[bytes | None]) -> None:
        """Write each key again with its *current* value (a later write may have
        overtaken the refused one)."""
        for key in keys:
            assert key is not None
            self.send_changelog(self.partition_for_key(key), key, self.data.get(key), "raw", "raw")


MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # the largest table value (a busy account-hour of usage)
# What a producer of table changelogs lets a request be: one value and its framing.
MAX_REQUEST_BYTES = MAX_MESSAGE_BYTES + 1024 * 1024


def table_producer(kafka: Kafka, watch: Watch | None) -> BulkProducer:
    """A BulkProducer for table changelogs (and what goes with them): its requests
    take the largest table value. Its owner closes it when the worker stops."""
    return BulkProducer(kafka, watch, extra={"message.max.bytes": MAX_REQUEST_BYTES})


def account_table(
    app: faust.App, name: str, partitions: int, help: str, kind: type[AccountTable] = AccountTable
) -> AccountTable:
    """Declare an account-partitioned table; keys and values are bytes (raw on the wire).

    Keys must be bytes (`table_key(...).encode()`, `account_key(...)`). faust routes web
    requests (`table_route`) by the raw account code, which hashes exactly like the
    account on every other topic and so finds the partition its keys were written to.
    """
    table = kind(
        app,
        name=name,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        beacon=app.tables.beacon,
        help=help,
        extra_topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)},
    )
    app.tables.add(table)
    return table
