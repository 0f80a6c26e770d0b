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
    """The delta topic (append-only, tombstones remove) and the snapshot topic (every
    write in order), as a worker would leave them."""

    deltas: list[tuple[bytes, bytes]] = field(default_factory=list)
    snapshots: list[tuple[bytes, bytes | None]] = field(default_factory=list)

    def write(self, deltas: Iterable[Delta]) -> None:
        self.deltas.extend((delta.key, delta.value) for delta in deltas)

    def write_round(self, round_: SnapshotRound) -> None:
        self.snapshots.extend((record.key, record.value) for record in round_.records)
        self.snapshots.append((round_.marker.key, round_.marker.value))

    def tombstone(self, keys: Iterable[bytes]) -> None:
        gone = set(keys)
        self.deltas = [(key, value) for key, value in self.deltas if key not in gone]

    def compacted(self) -> list[tuple[bytes, bytes | None]]:
        latest: dict[bytes, bytes | None] = {}
        for key, value in self.snapshots:
            latest.pop(key, None)
            latest[key] = value
        return [(key, value) for key, value in latest.items() if value is not None]

    def recover(self, into: ReferenceEngine, compacted: bool = True) -> ReferenceEngine:
        for key, value in self.compacted() if compacted else self.snapshots:
            into.restore(key, value)
        for _, value in self.deltas:
            into.apply(value)
        return into
