"""The usage engine's contract: what the usage agent, the query page and the bill run call.

No faust and no Kafka in here: messages come in as `streams.usage.metering.Message`, durable
changes go out as bytes (`Delta`, `SnapshotRecord`) for the caller to produce, and every
fact the engine needs from elsewhere (catalog, billing boundaries, locked periods) is
pushed in with a setter instead of read through a callback, so a native implementation
never calls back into Python. The wire formats are in `streams.usage.engine.wire`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple, Protocol

from streams.schemas.catalog import AggregationFunction, Catalog
from streams.usage.metering import Message, Rejected
from streams.usage.state import UsageState, value
from streams.usage.store import MAX_RECORD_BYTES, MAX_UIDS_PER_RECORD

# One delta message: under the broker's default max.message.bytes (1 MiB), less room for
# the key, headers and the record batch.
MAX_DELTA_BYTES = 1024 * 1024 - 64 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that turn growth into dead letters instead of failures.

    `max_uids_per_slot`: uids remembered per account-hour (today's record bound).
    `max_delta_bytes`: one delta message; an account-hour's share of one batch must fit.
    `max_segment_bytes`: one snapshot segment (an account-hour's usage and uids), the
    same bound as today's usage record.
    """

    max_uids_per_slot: int = MAX_UIDS_PER_RECORD
    max_delta_bytes: int = MAX_DELTA_BYTES
    max_segment_bytes: int = MAX_RECORD_BYTES


@dataclass(frozen=True, slots=True)
class LockedPeriod:
    """[start, end) in epoch ms of a locked bill; `reason` is what a refused measurement says."""

    start: int
    end: int
    reason: str


@dataclass(frozen=True, slots=True)
class Delta:
    """One message of the delta topic: produce `value` with `key` to `partition`."""

    partition: int
    seq: int
    chunk: int
    chunks: int
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Forward:
    """Measurements read from another account's partition: produce them to `partition` of
    the measurements topic (an envelope), where the account's owner folds them."""

    partition: int
    key: bytes
    value: bytes
    count: int


@dataclass(frozen=True, slots=True)
class Stats:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    forwarded: int = 0
    newest_ts: int = 0  # the newest ts among this batch's new measurements, 0 if none


@dataclass(frozen=True, slots=True)
class Processed:
    """What one batch did: deltas to make durable, dead letters, forwards, counts."""

    deltas: list[Delta] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    forwards: list[Forward] = field(default_factory=list)
    stats: Stats = Stats()


class Applied(NamedTuple):
    partition: int
    seq: int
    chunk: int
    applied: bool  # False: already reflected (replayed, or older than a snapshot)


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """One message of the snapshot topic (compacted); `value` None is a tombstone."""

    partition: int
    key: bytes
    value: bytes | None


@dataclass(frozen=True, slots=True)
class SnapshotRound:
    """Everything a snapshot of one partition writes, in the order it must be written.

    1. `records` (segments changed since the last confirmed round, at seq `seq`;
       tombstones for segments that emptied),
    2. then `marker` (the partition's floor: every delta with seq <= `seq` is reflected),
    3. then `confirm_snapshot(round)`,
    4. then tombstones for the delta messages `obsolete` (their seq is <= `seq`).
    Each step starts only after Kafka acknowledged the previous one. A round that failed
    is not confirmed: the next round writes its segments again.
    """

    partition: int
    seq: int
    records: list[SnapshotRecord]
    marker: SnapshotRecord
    obsolete: list[bytes]


class UsageEngine(Protocol):
    """Meter measurements into usage, keep it durable through deltas, answer reads.

    State is held per partition of the measurements topic (an account's partition is
    `partition_for(account, partitions)`); the engine holds the partitions it is given
    messages, deltas or snapshot records for, until `revoke`.
    """

    # True when `process` may run on another thread than the event loop's: the engine
    # then serializes its calls (another call waits for the batch) and leaves the GIL
    # to the loop while it folds. The Python reference holds the GIL: False.
    parallel: bool

    # --- facts pushed in --------------------------------------------------------------

    def set_catalog(self, catalog: Catalog) -> None:
        """The live catalog; measurements are judged and folded against it."""

    def set_boundaries(self, account: str, boundaries: Iterable[int]) -> None:
        """Billing boundaries of `account` (epoch ms) that split its hourly windows."""

    def set_locked(self, account: str, periods: Iterable[LockedPeriod]) -> None:
        """Periods of `account` whose bills are locked: their measurements are refused."""

    # --- the usage agent -------------------------------------------------------------

    def process(self, messages: Sequence[Message], now_ms: int) -> Processed:
        """Judge, de-duplicate and fold a batch; one delta (in chunks) per partition changed.

        `now_ms` (the wall clock) only bounds how old or new a measurement's ts may be.
        The state changes at once; the caller makes the deltas durable (and sends the
        rejections and forwards) before it acknowledges the batch's offsets.
        """

    def expire(self, partitions: Iterable[int] | None = None) -> list[Delta]:
        """Drop uids past the dedup horizon and windows past the retention, measured from
        each partition's newest ts (never the wall clock); the deltas record it."""

    def snapshot(self, partition: int) -> SnapshotRound:
        """Segments changed since the last confirmed round, and what may be tombstoned
        once they are written (see `SnapshotRound`)."""

    def confirm_snapshot(self, round_: SnapshotRound) -> None:
        """The round's records and marker are acknowledged: its floor holds from now on."""

    # --- recovery and standbys -------------------------------------------------------

    def recover(self, key: bytes, value: bytes | None) -> None:
        """One record of the usage log (deltas, segments, markers and their tombstones
        share it), in the log's order: recovery and standbys read the log with this."""

    def restore(self, key: bytes, value: bytes | None) -> None:
        """Load one segment or marker record (a tombstone deletes the segment)."""

    def apply(self, value: bytes) -> Applied:
        """Apply one delta message (in the order of its partition); a replay is a no-op."""

    def next_seq(self, partition: int) -> int:
        """The seq the next delta of `partition` will carry."""

    def revoke(self, partition: int) -> None:
        """Forget everything of `partition` (it moved to another worker)."""

    # --- reads -------------------------------------------------------------------------

    def query(
        self,
        account: str,
        aggregations: Iterable[str],
        start: int,
        end: int,
        bucket_ms: int | None = None,
    ) -> dict[tuple[str, int], UsageState]:
        """Merged state per (aggregation, bucket) of the windows starting in [start, end).

        A window's bucket is `start - start % bucket_ms` (HOUR_MS: its hour, DAY_MS: its
        UTC day); bucket_ms None puts every window in bucket 0. Only (aggregation,
        bucket) pairs with usage are present; unknown aggregations are left out."""

    def period_values(
        self,
        account: str,
        aggregations: Mapping[str, AggregationFunction],
        start: int,
        end: int,
    ) -> dict[str, Decimal | None]:
        """The raw value of each aggregation over [start, end); None when no usage."""

    def query_segments(
        self,
        account: str,
        aggregations: Iterable[str],
        start: int,
        end: int,
        bucket_ms: int | None = None,
    ) -> dict[tuple[str, str, int], UsageState]:
        """Like `query`, per segment too: merged state per (aggregation, segment id,
        bucket); an aggregation without segmentedFields has the one segment ""."""

    def period_segment_values(
        self,
        account: str,
        aggregations: Mapping[str, AggregationFunction],
        start: int,
        end: int,
    ) -> dict[tuple[str, str], Decimal | None]:
        """The raw value of each (aggregation, segment id) with usage over [start, end).
        `period_values` gives a segmented aggregation's value over all its segments."""

    def accounts(self, partitions: Iterable[int], start: int, end: int) -> list[str]:
        """Accounts of `partitions` with a window starting in [start, end), sorted."""


def segment_values(
    states: Mapping[tuple[str, str, int], UsageState],
    aggregations: Mapping[str, AggregationFunction],
) -> dict[tuple[str, str], Decimal | None]:
    """`period_segment_values` from `query_segments`' answer over one bucket."""
    return {
        (code, segment): value(state, aggregations[code])
        for (code, segment, _), state in sorted(states.items())
        if code in aggregations
    }
