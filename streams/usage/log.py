"""The usage log: a faust table whose changelog holds the usage engine's durable records.

The usage engine (`streams.usage.engine`) makes its state durable as one log per
partition of `measurements`: delta messages (one per batch, in chunks), snapshot
segments (an account-hour each), markers and tombstones, all in one compacted topic,
co-partitioned with `measurements`. Recovery and standbys read that log in order and
hand each record to `UsageEngine.recover` (the algorithm is in the engine's package
docstring).

Why a faust table and not a consumer of our own: faust already does what the log needs
around a rebalance. It reads an assigned partition's changelog to its end before the
agent gets a measurement of that partition (active recovery), follows the changelog of
standby partitions, keeps its place for partitions it keeps, routes web requests to the
partition's owner (`table_route`), and the worker's readiness already waits for it. So
the table stays, and only its storage is ours: `UsageLogStore` keeps nothing itself
and feeds every changelog record to the engine. Why one topic and not a delta topic
beside a snapshot topic: faust reads the changelogs of several tables in no order
relative to each other, and the recovery algorithm needs a segment to come after the
deltas it holds and before the ones it does not.

The agent writes the log itself (`streams.delivery.deliver`: produced, then awaited
until Kafka acknowledged it), never through the table's `__setitem__`, whose writes
faust's commit does not wait for.

Records written by the worker before the engine (today's key, `<account>|<hour slot>`,
with the record `{"h": {...}, "u": [...]}`) are read as segments at seq 0, so an
upgraded worker keeps the usage it had.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from faust.stores import memory
from faust.types import TP, EventT, StoreT

from streams.partitioning import partition_for
from streams.sources import Source
from streams.tables import AccountTable, split_key
from streams.usage.engine import UsageEngine, wire
from streams.usage.engine.state import UNSEGMENTED

log = logging.getLogger(__name__)


class UsageLogStore(memory.Store[bytes, bytes]):
    """faust storage that keeps nothing: every changelog record goes to the engine."""

    def __init__(
        self,
        *args: Any,
        engine: UsageEngine,
        partitions: int,
        stats: Counter[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.engine = engine
        self.partitions = partitions
        self.stats: Counter[str] = Counter() if stats is None else stats
        # Partitions whose measurements may be processed here: None until the first
        # rebalance (everything; a worker with no group yet), then those recovered as
        # actives. A partition leaves as soon as a rebalance revokes it, so a batch
        # read before the rebalance never writes to a log another worker now owns.
        self.writable: set[int] | None = None

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT[Any]],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        engine = self.engine
        for event in batch:
            message = event.message
            key, value = message.key, message.value
            if key is None:
                continue
            try:
                if value is not None and legacy(key, value):
                    value = legacy_segment(key, value, self.partitions)
                engine.recover(key, value)
            except (wire.WireError, ValueError, KeyError, TypeError) as exc:
                # Never wedge recovery on one record; say where it is, loudly.
                self.stats["usage_log_unreadable"] += 1
                log.error(
                    "usage log record %s key=%r cannot be read, skipped: %s",
                    Source(message.topic, message.partition, message.offset),
                    key,
                    exc,
                )

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        gone = {tp.partition for tp in revoked}
        if self.writable is None:
            self.writable = set(range(self.partitions))
        self.writable -= gone

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Forget the partitions this worker neither owns nor follows any more; write
        to the ones it owns."""
        topic = self.table.changelog_topic.get_topic_name()
        held = {tp.partition for tp in (*active_tps, *standby_tps) if tp.topic == topic}
        for partition in range(self.partitions):
            if partition not in held:
                self.engine.revoke(partition)
        self.writable = {tp.partition for tp in active_tps if tp.topic == topic}

    def persisted_offset(self, tp: TP) -> int | None:
        return None


class UsageLogTable(AccountTable):
    """The `usage` table: its changelog is the usage log, its storage the engine."""

    # set right after the table is declared, before faust makes its storage
    engine: UsageEngine
    stats: Counter[str]

    def _new_store(self) -> StoreT[Any, Any]:
        return UsageLogStore(
            "memory://",
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            engine=self.engine,
            partitions=self.partitions or 1,
            stats=self.stats,
        )

    @property
    def store(self) -> UsageLogStore:
        data = self.data
        assert isinstance(data, UsageLogStore)
        return data


def legacy(key: bytes, value: bytes) -> bool:
    """A usage record of the worker before the engine: `{"h": ..., "u": [...]}`."""
    return value[:5] == b'{"h":' and not key.startswith(b"|")


def legacy_segment(key: bytes, value: bytes, partitions: int) -> bytes:
    """A record of the worker before the engine, as a segment at seq 0 (uids were the
    first 11 base64 characters of the same 8-byte hash the engine keeps)."""
    account, rest = split_key(key)
    if rest is None:
        raise wire.WireError("usage record key", f"{key!r} is not '<account>|<slot>'")
    slot = int(rest)
    document = orjson.loads(value)
    windows = {
        int(start): {
            (code, UNSEGMENTED): wire.cell_from_document(state, f"record.h[{start}][{code}]")
            for code, state in states.items()
        }
        for start, states in document["h"].items()
    }
    hashes = []
    for uid in document.get("u", ()):
        try:
            hashes.append(int.from_bytes(base64.b64decode(uid + "="), "big"))
        except (binascii.Error, ValueError):
            raise wire.WireError("record.u", f"{uid!r} is not a uid hash") from None
    partition = partition_for(account, partitions)
    return wire.segment_value(partition, account, slot, 0, windows, hashes)
