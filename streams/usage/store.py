"""Usage state as stored: one record per (account, hour of `ts`).

A record holds the `UsageState` of every aggregation of that account and hour (one
window, or several when a billing boundary splits the hour) and the uids of the
measurements folded into it (the de-duplication memory, as 64-bit hashes). One record
is written once per batch in which the account-hour changed, so usage and
de-duplication change together, atomically, in one changelog message.

Retention is by event time: uids are dropped from records older than the dedup
horizon and records older than the usage retention are deleted, both measured from
the newest `ts` the worker has seen, never from the wall clock.
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import orjson

from streams.clock import DAY_MS, HOUR_MS
from streams.schemas.catalog import AggregationFunction
from streams.tables import MAX_MESSAGE_BYTES, account_of, split_key, table_key
from streams.usage.state import UsageState, from_document, merge, merge_all, to_document, value

UID_SEPARATOR = b"\x1f"
# A record must fit in one Kafka message (the usage changelog allows 8 MiB): past this
# many uids in one account-hour, further measurements are dead-lettered, not folded.
MAX_UIDS_PER_RECORD = 400_000
# The largest record written: what one message of the usage changelog holds, less room
# for the key and the record batch's overhead. A batch that would grow a record past it
# is dead-lettered for that record (see `Metering`), never sent to fail in the producer.
MAX_RECORD_BYTES = MAX_MESSAGE_BYTES - 64 * 1024


def slot_of(ts_ms: int) -> int:
    """The record slot of an epoch-ms timestamp: hours since the epoch, UTC."""
    return ts_ms // HOUR_MS


def record_key(account: str, slot: int) -> str:
    return table_key(account, slot)


def parse_record_key(key: str) -> tuple[str, int]:
    account, slot = split_key(key)
    return account, int(slot or "")


def uid_key(meter: str, uid: str) -> str:
    """A 64-bit hash of (meter, uid), 11 characters: what de-duplication remembers."""
    digest = hashlib.blake2b(meter.encode() + UID_SEPARATOR + uid.encode(), digest_size=8)
    return base64.b64encode(digest.digest()).decode()[:11]


@dataclass
class UsageRecord:
    hours: dict[int, dict[str, UsageState]] = field(default_factory=dict)
    uids: set[str] = field(default_factory=set)

    def add(self, aggregation: str, hour: int, delta: UsageState) -> None:
        states = self.hours.setdefault(hour, {})
        current = states.get(aggregation)
        states[aggregation] = delta if current is None else merge(current, delta)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "h": {
                    str(hour): {code: to_document(state) for code, state in sorted(states.items())}
                    for hour, states in sorted(self.hours.items())
                },
                "u": sorted(self.uids),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> UsageRecord:
        document = orjson.loads(data)
        return cls(
            hours={
                int(hour): {code: from_document(state) for code, state in states.items()}
                for hour, states in document["h"].items()
            },
            uids=set(document.get("u", ())),
        )


class RecordCache:
    """Decoded records by key, valid while the table still holds the same bytes object."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[bytes, UsageRecord]] = OrderedDict()

    def get(self, key: str, stored: bytes | None) -> UsageRecord:
        if stored is None:
            self._entries.pop(key, None)
            return UsageRecord()
        entry = self._entries.get(key)
        if entry is not None and entry[0] is stored:
            self._entries.move_to_end(key)
            return entry[1]
        record = UsageRecord.from_bytes(stored)
        self.put(key, stored, record)
        return record

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def put(self, key: str, stored: bytes, record: UsageRecord) -> None:
        self._entries[key] = (stored, record)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


Reader = Callable[[str], bytes | None]


def merged_states(
    read: Reader,
    account: str,
    aggregations: Iterable[str],
    start_ms: int,
    end_ms: int,
    bucket: Callable[[int], int] | None = None,
) -> dict[tuple[str, int], UsageState]:
    """Merge the hourly states of [start_ms, end_ms) per (aggregation, bucket start).

    `bucket` maps an hour start to its group (e.g. its day); None = one group (0).
    """
    wanted = set(aggregations)
    parts: dict[tuple[str, int], list[UsageState]] = {}
    for slot in range(slot_of(start_ms), slot_of(end_ms - 1) + 1):
        stored = read(record_key(account, slot))
        if stored is None:
            continue
        for hour, states in UsageRecord.from_bytes(stored).hours.items():
            if not start_ms <= hour < end_ms:
                continue
            group = bucket(hour) if bucket else 0
            for code, state in states.items():
                if code in wanted:
                    parts.setdefault((code, group), []).append(state)
    return {key: merge_all(states) for key, states in parts.items()}


def period_values(
    read: Reader,
    account: str,
    aggregations: Mapping[str, AggregationFunction],
    start_ms: int,
    end_ms: int,
) -> dict[str, Decimal | None]:
    """The raw value of each aggregation over [start_ms, end_ms); None when no usage."""
    merged = merged_states(read, account, aggregations, start_ms, end_ms)
    return {code: value(merged.get((code, 0)), function) for code, function in aggregations.items()}


def expired(
    keys: Iterable[str], newest_ts_ms: int, dedup_days: int, retention_days: int
) -> Iterator[tuple[str, bool]]:
    """(key, delete?) for records past the dedup horizon (False) or the retention (True)."""
    newest = slot_of(newest_ts_ms)
    for key in keys:
        _, slot = parse_record_key(key)
        if slot < newest - retention_days * 24:
            yield key, True
        elif slot < newest - dedup_days * 24:
            yield key, False


__all__ = [
    "DAY_MS",
    "RecordCache",
    "UsageRecord",
    "account_of",
    "expired",
    "merged_states",
    "period_values",
    "record_key",
    "slot_of",
    "uid_key",
]
