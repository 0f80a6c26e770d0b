"""Factories for the usage engine tests: a catalog using every aggregation function,
measurements, messages on their account's partition, and a topic log for recovery."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.clock import HOUR_MS
from streams.partitioning import partition_for
from streams.schemas.catalog import AggregationFunction, Catalog
from streams.schemas.numbers import encode_json
from streams.sources import Source
from streams.usage.engine import Delta, ReferenceEngine, SnapshotRound
from streams.usage.engine.wire import is_delta_key
from streams.usage.metering import Message

PARTITIONS = 3
T0 = 1_795_000_000_000 - 1_795_000_000_000 % (24 * HOUR_MS)  # a UTC midnight
NOW = T0 + 12 * HOUR_MS
TOPIC = "measurements"

FUNCTIONS = {
    "calls_sum": ("calls", AggregationFunction.SUM),
    "calls_min": ("calls", AggregationFunction.MIN),
    "calls_max": ("calls", AggregationFunction.MAX),
    "calls_count": ("calls", AggregationFunction.COUNT),
    "calls_mean": ("calls", AggregationFunction.MEAN),
    "calls_latest": ("calls", AggregationFunction.LATEST),
    "calls_unique": ("calls", AggregationFunction.UNIQUE),
    "users": ("user", AggregationFunction.UNIQUE),
    "user_count": ("user", AggregationFunction.COUNT),
    "gb_sum": ("gb", AggregationFunction.SUM),
}
AGGREGATIONS = {code: function for code, (_, function) in FUNCTIONS.items()}
CATALOG = Catalog.from_documents(
    {
        "meters": [
            {
                "code": "api",
                "dataFields": [
                    {"category": "WHO", "code": "user"},
                    {"category": "MEASURE", "code": "calls"},
                    {"category": "MEASURE", "code": "bytes"},
                ],
                "derivedFields": [
                    {"category": "MEASURE", "code": "gb", "calculation": "bytes / 1000"}
                ],
            },
            {"code": "silent", "dataFields": [{"category": "MEASURE", "code": "calls"}]},
        ],
        "aggregations": [
            {"code": code, "meter": "api", "targetField": target, "aggregation": function}
            for code, (target, function) in FUNCTIONS.items()
        ],
    }
)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def m(
    uid: str,
    calls: Any = 1,
    *,
    account: str = "acme",
    ts: int = T0,
    user: str | None = None,
    meter: str = "api",
    **extra: Any,
) -> dict[str, Any]:
    """A measurement as a producer sends it (`calls` None: no calls field)."""
    document: dict[str, Any] = {"uid": uid, "meter": meter, "account": account, "ts": iso(ts)}
    if calls is not None:
        document["measure"] = {"calls": calls}
    if user is not None:
        document["who"] = {"user": user}
    document.update(extra)
    return document


def home(account: str) -> int:
    return partition_for(account, PARTITIONS)


def message(offset: int, *measurements: dict[str, Any], partition: int | None = None) -> Message:
    """An envelope (or a single measurement) on its first account's partition."""
    where = home(measurements[0]["account"]) if partition is None else partition
    value = measurements[0] if len(measurements) == 1 else {"measurements": list(measurements)}
    key = str(measurements[0]["account"]).encode()
    return Message(key, encode_json(value), Source(TOPIC, where, offset))


def raw(offset: int, value: bytes, partition: int = 0) -> Message:
    return Message(b"key", value, Source(TOPIC, partition, offset))


def engine(**kwargs: Any) -> ReferenceEngine:
    return ReferenceEngine(PARTITIONS, CATALOG, **kwargs)


@dataclass
class Log:
    """The usage log (deltas, segments, markers and tombstones in the order a worker
    wrote them), and what Kafka's compaction may leave of it."""

    records: list[tuple[bytes, bytes | None]] = field(default_factory=list)

    @property
    def deltas(self) -> list[tuple[bytes, bytes]]:
        """The delta messages a reader would still find (not tombstoned)."""
        return [(k, v) for k, v in self.compacted() if v is not None and is_delta_key(k)]

    def write(self, deltas: Iterable[Delta]) -> None:
        self.records.extend((delta.key, delta.value) for delta in deltas)

    def write_round(self, round_: SnapshotRound) -> None:
        self.records.extend((record.key, record.value) for record in round_.records)
        self.records.append((round_.marker.key, round_.marker.value))

    def tombstone(self, keys: Iterable[bytes]) -> None:
        self.records.extend((key, None) for key in keys)

    def compacted(
        self, head: int | None = None, drop_tombstones: bool = True
    ) -> list[tuple[bytes, bytes | None]]:
        """The log after compaction of its first `head` records (all by default): a record
        is gone when a later one has its key; a tombstone, once old enough, goes too.
        Kafka never compacts the active segment, nor moves a record."""
        head = len(self.records) if head is None else head
        last = {key: at for at, (key, _) in enumerate(self.records)}
        return [
            (key, value)
            for at, (key, value) in enumerate(self.records)
            if at >= head or (last[key] == at and (value is not None or not drop_tombstones))
        ]

    def recover(
        self, into: ReferenceEngine, compacted: bool = True, head: int | None = None
    ) -> ReferenceEngine:
        for key, value in self.compacted(head) if compacted else self.records:
            into.recover(key, value)
        return into
