"""Metering a batch of `measurements` messages: decode, validate, de-duplicate, fold.

Pure apart from the `read` callable that looks up stored records (per account-hour,
`streams.usage`): the usage book hands in a batch of messages and gets back the records
to write and the rejections to dead-letter. Each measurement is judged on its own;
nothing is dropped silently (duplicates are counted, everything else that is not folded
is rejected with a reason).
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from streams.clock import HOUR_MS
from streams.schemas.catalog import Catalog
from streams.schemas.numbers import DecodeError, decode_json, encode_json
from streams.sources import Source
from streams.usage.state import fold
from streams.usage.store import (
    MAX_RECORD_BYTES,
    MAX_UIDS_PER_RECORD,
    Reader,
    RecordCache,
    UsageRecord,
    parse_record_key,
    record_key,
    slot_of,
    uid_key,
)
from streams.usage.validate import DEFAULT_HORIZON, Horizon, Rejection, ValidMeasurement, rules_for

log = logging.getLogger(__name__)

LockCheck = Callable[[str, int], str | None]
Boundaries = Callable[[str], Sequence[int]]


class Windows:
    """Window starts: the hour of `ts`, split at the account's billing boundaries.

    A boundary (a billing period or account plan start/end, epoch ms) inside an hour
    starts a window of its own, so a period's usage is exactly the merge of the windows
    that start inside it, even when periods do not start on the hour.
    """

    def __init__(self, boundaries: Boundaries | None) -> None:
        self.boundaries = boundaries
        self._cache: dict[str, Sequence[int]] = {}

    def __call__(self, account: str, ts: int) -> int:
        hour = ts - ts % HOUR_MS
        if self.boundaries is None:
            return hour
        known = self._cache.get(account)
        if known is None:
            known = self._cache[account] = sorted(self.boundaries(account))
        index = bisect_right(known, ts)
        if index and known[index - 1] > hour:
            return known[index - 1]
        return hour


@dataclass(frozen=True, slots=True)
class Rejected:
    account: str | None
    field: str
    reason: str
    measurement: Any
    source: Source
    index: int | None = None

    def to_bytes(self) -> bytes:
        return encode_json(
            {
                "account": self.account,
                "field": self.field,
                "reason": self.reason,
                "source": str(self.source),
                "sourceTopic": self.source.topic,
                "sourcePartition": self.source.partition,
                "sourceOffset": self.source.offset,
                "index": self.index,
                "measurement": self.measurement,
            }
        )


@dataclass
class BatchOutcome:
    writes: dict[str, bytes] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    newest_ts: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes | None
    value: bytes | None
    source: Source


class Carried(NamedTuple):
    measurements: list[Any]
    envelope: bool


def measurements_of(value: bytes | None) -> Carried | str:
    """The measurements a message carries, or why it carries none.

    A message is one m3ter measurement (a JSON object) or a batch envelope
    `{"measurements": [...]}`. Numbers are decoded exactly (`decode_json`: int, Decimal),
    never through a float.
    """
    if not value:
        return "empty message"
    try:
        document = decode_json(value)
    except DecodeError as exc:
        return f"not JSON: {exc}"
    if isinstance(document, dict):
        batch = document.get("measurements")
        if batch is None:
            return Carried([document], envelope=False)
        if isinstance(batch, list):
            return Carried(batch, envelope=True)
        return "measurements must be a list"
    return 'expected a measurement object or a {"measurements": [...]} envelope'


class Metering:
    """Folds batches of messages into account-hour records; keeps a cache of decoded
    records."""

    def __init__(self, horizon: Horizon = DEFAULT_HORIZON, cache_size: int = 20_000) -> None:
        self.horizon = horizon
        self.cache = RecordCache(cache_size)

    def process(
        self,
        messages: Iterable[Message],
        catalog: Catalog,
        now_ms: int,
        read: Reader,
        locked: LockCheck | None = None,
        boundaries: Boundaries | None = None,
    ) -> BatchOutcome:
        outcome = BatchOutcome()
        windows = Windows(boundaries)
        rules = rules_for(catalog)
        touched: dict[str, UsageRecord] = {}
        fresh: list[ValidMeasurement] = []
        origins: list[tuple[Any, Source, int | None]] = []
        for message in messages:
            carried = measurements_of(message.value)
            if isinstance(carried, str):
                key = message.key.decode(errors="replace") if message.key else None
                raw = message.value.decode(errors="replace") if message.value else None
                outcome.rejected.append(Rejected(key, "value", carried, raw, message.source))
                continue
            for index, raw in enumerate(carried.measurements):
                position = index if carried.envelope else None
                try:
                    verdict = self._judge(raw, rules, now_ms, read, locked, touched)
                except Exception as exc:  # a bug must cost one measurement, not the stream
                    log.exception("measurement %s#%s failed", message.source, position)
                    verdict = Rejection("measurement", f"internal error: {exc!r}")
                if isinstance(verdict, Rejection):
                    account = raw.get("account") if isinstance(raw, dict) else None
                    outcome.rejected.append(
                        Rejected(
                            account if isinstance(account, str) else None,
                            verdict.field,
                            verdict.reason,
                            raw,
                            message.source,
                            position,
                        )
                    )
                elif verdict is None:
                    outcome.duplicates += 1
                else:
                    fresh.append(verdict)
                    origins.append((raw, message.source, position))
                    outcome.newest_ts = max(outcome.newest_ts, verdict.ts)
        self._fold(fresh, origins, catalog, touched, outcome, windows)
        for key, record in touched.items():
            stored = record.to_bytes()
            if len(stored) > MAX_RECORD_BYTES:
                self._refuse_record(key, len(stored), fresh, origins, outcome)
                continue
            self.cache.put(key, stored, record)
            outcome.writes[key] = stored
        return outcome

    def _refuse_record(
        self,
        key: str,
        size: int,
        fresh: list[ValidMeasurement],
        origins: list[tuple[Any, Source, int | None]],
        outcome: BatchOutcome,
    ) -> None:
        """Dead-letter this batch's measurements of a record that outgrew a Kafka message.

        The record keeps its stored state (the cached copy, changed in place, is dropped),
        so nothing of the refused measurements is counted, and every other record of the
        batch is written as usual.
        """
        self.cache.forget(key)
        account, slot = parse_record_key(key)
        reason = (
            f"the usage record of account {account!r} for the hour starting "
            f"{slot * HOUR_MS} (epoch ms) would grow to {size:,} bytes, more than the "
            f"{MAX_RECORD_BYTES:,} one Kafka message holds: not counted"
        )
        for measurement, (raw, source, position) in zip(fresh, origins, strict=True):
            if record_key(measurement.account, slot_of(measurement.ts)) == key:
                outcome.accepted -= 1
                outcome.rejected.append(
                    Rejected(measurement.account, "measurement", reason, raw, source, position)
                )
        log.error("%s", reason)

    def _judge(
        self,
        raw: Any,
        rules: Any,
        now_ms: int,
        read: Reader,
        locked: LockCheck | None,
        touched: dict[str, UsageRecord],
    ) -> ValidMeasurement | Rejection | None:
        """The valid measurement, why it is rejected, or None for a duplicate."""
        verdict: ValidMeasurement | Rejection = rules.validate(raw, now_ms, self.horizon)
        if isinstance(verdict, Rejection):
            return verdict
        if locked is not None:
            reason = locked(verdict.account, verdict.ts)
            if reason is not None:
                return Rejection("ts", reason)
        key = record_key(verdict.account, slot_of(verdict.ts))
        record = touched.get(key)
        if record is None:
            record = touched[key] = self.cache.get(key, read(key))
        seen = uid_key(verdict.meter, verdict.uid)
        if seen in record.uids:
            return None
        if len(record.uids) >= MAX_UIDS_PER_RECORD:
            return Rejection(
                "ts",
                f"account {verdict.account!r} has more than {MAX_UIDS_PER_RECORD:,} "
                "measurements in this hour: its de-duplication memory is full",
            )
        record.uids.add(seen)
        return verdict

    def _fold(
        self,
        fresh: list[ValidMeasurement],
        origins: list[tuple[Any, Source, int | None]],
        catalog: Catalog,
        touched: dict[str, UsageRecord],
        outcome: BatchOutcome,
        windows: Windows,
    ) -> None:
        if not fresh:
            return
        try:
            deltas = fold(catalog, fresh, windows)
        except Exception:
            log.exception("folding a batch of %d failed; folding one by one", len(fresh))
            for measurement, origin in zip(fresh, origins, strict=True):
                self._fold_one(measurement, origin, catalog, touched, outcome, windows)
            return
        for (account, aggregation, hour), delta in deltas.items():
            touched[record_key(account, slot_of(hour))].add(aggregation, hour, delta)
        outcome.accepted += len(fresh)

    def _fold_one(
        self,
        measurement: ValidMeasurement,
        origin: tuple[Any, Source, int | None],
        catalog: Catalog,
        touched: dict[str, UsageRecord],
        outcome: BatchOutcome,
        windows: Windows,
    ) -> None:
        record = touched[record_key(measurement.account, slot_of(measurement.ts))]
        try:
            deltas = fold(catalog, [measurement], windows)
        except Exception as exc:
            record.uids.discard(uid_key(measurement.meter, measurement.uid))
            outcome.rejected.append(
                Rejected(
                    measurement.account,
                    "measurement",
                    f"internal error: {exc!r}",
                    *origin,
                )
            )
            return
        for (_, aggregation, hour), delta in deltas.items():
            record.add(aggregation, hour, delta)
        outcome.accepted += 1
