"""The native usage engine: `contract.UsageEngine` over the Rust module `meterline_native`.

The Rust side (`native/`) decodes, validates, de-duplicates, folds, encodes deltas and
snapshots, applies and restores them and answers queries, with the reference's bytes and
answers (tests/unit/test_native_engine_differential.py holds it to that). This class only
converts between the contract's dataclasses and the module's tuples, and hands Python the
few things it words or judges itself:

- a message the Rust reader refuses is judged by `measurements_of` (its "not JSON: ..."
  reason is msgspec's); one it reads after all is re-encoded for the Rust reader;
- a timestamp in an unusual ISO 8601 form, or a rejection quoting a non-ASCII value with
  `repr`, is judged by the reference validator (`CatalogRules.validate`), and the Rust
  side goes on with that verdict;
- dead letters quote the measurement as Python decoded it (`Rejected.to_bytes`), and
  forwards are encoded by `encode_json`, as the reference does;
- an unreadable delta or snapshot record is explained by `wire`'s decoders, so the
  `WireError` names the same place;
- `period_values` reads each aggregation's value from the merged state in Python
  (`streams.usage.state.value`, one division per aggregation for MEAN).
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

import meterline_native
import orjson

from streams.partitioning import partition_for
from streams.schemas.catalog import AggregationFunction, Catalog
from streams.schemas.numbers import decode_json, encode_json
from streams.tables import split_key
from streams.usage.engine import wire
from streams.usage.engine.contract import (
    Applied,
    Delta,
    Limits,
    LockedPeriod,
    Processed,
    SnapshotRecord,
    SnapshotRound,
    Stats,
    UsageEngine,
    segment_values,
)
from streams.usage.engine.fold import Route, compile_plan
from streams.usage.engine.reference import DEFAULT_RETENTION_DAYS, _forwards
from streams.usage.metering import Carried, Message, Rejected, measurements_of
from streams.usage.state import UsageState, value
from streams.usage.validate import DEFAULT_HORIZON, CatalogRules, Horizon, Rejection

# A reason the Rust side leaves to Python (it quotes an account that is not plain ASCII):
# "\0<kind>|<numbers>".
_WORDED = "\0"


class _Serialized:
    """The Rust engine with one call at a time: `process` releases the GIL while it folds
    (so the worker's event loop fetches and produces meanwhile), and a call from another
    thread then waits for it instead of finding the engine borrowed."""

    def __init__(self, core: Any) -> None:
        self._core = core
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._core, name)
        lock = self._lock

        def serialized(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        setattr(self, name, serialized)  # found as an attribute from now on
        return serialized


class NativeEngine:
    """`streams.usage.engine.contract.UsageEngine` in Rust (see the module docstring)."""

    # `process` may run on a worker thread while other calls wait (see `_Serialized`)
    parallel = True

    def __init__(
        self,
        partitions: int,
        catalog: Catalog | None = None,
        horizon: Horizon = DEFAULT_HORIZON,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        limits: Limits = Limits(),
        threads: int = 1,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.partitions = partitions
        self.horizon = horizon
        self.retention_days = retention_days
        self.limits = limits
        # One Rust engine per thread, each holding the partitions p with p % threads == its
        # number: a batch's partitions are folded on all of them at once.
        self._cores: list[Any] = [  # untyped: the extension module has no stubs
            _Serialized(
                meterline_native.Engine(
                    partitions,
                    horizon.past_ms,
                    horizon.future_ms,
                    horizon.too_old,
                    horizon.too_new,
                    retention_days,
                    limits.max_uids_per_slot,
                    limits.max_delta_bytes,
                    limits.max_segment_bytes,
                )
            )
            for _ in range(min(threads, max(partitions, 1)))
        ]
        self._pool = (
            ThreadPoolExecutor(len(self._cores) - 1, thread_name_prefix="usage-engine")
            if len(self._cores) > 1
            else None
        )
        self._rules: CatalogRules | None = None
        if catalog is not None:
            self.set_catalog(catalog)

    def _core(self, partition: int) -> Any:
        return self._cores[partition % len(self._cores)]

    def _core_of(self, account: str) -> Any:
        return self._core(partition_for(account, self.partitions))

    def _each(self, method: str, *args: Any) -> list[Any]:
        return [getattr(core, method)(*args) for core in self._cores]

    # --- facts pushed in --------------------------------------------------------------

    def set_catalog(self, catalog: Catalog) -> None:
        rules = CatalogRules(catalog)
        self._each(
            "set_catalog",
            _catalog_spec(catalog, rules),
            self.horizon.past_ms,
            self.horizon.future_ms,
        )
        self._rules = rules

    def set_boundaries(self, account: str, boundaries: Iterable[int]) -> None:
        self._each("set_boundaries", account, sorted(set(boundaries)))

    def set_locked(self, account: str, periods: Iterable[LockedPeriod]) -> None:
        self._each("set_locked", account, [(p.start, p.end, p.reason) for p in periods])

    # --- process ---------------------------------------------------------------------

    def process(self, messages: Sequence[Message], now_ms: int) -> Processed:
        rules = self._rules
        if rules is None:
            raise RuntimeError("the engine has no catalog yet: call set_catalog() first")
        cores = len(self._cores)
        shares: list[list[int]] = [[] for _ in range(cores)]
        for number, message in enumerate(messages):
            shares[message.source.partition % cores].append(number)
        work = [(core, numbers) for core, numbers in enumerate(shares) if numbers] or [(0, [])]
        if len(work) == 1:  # one engine has the whole batch: fold it on this thread
            core, numbers = work[0]
            return self._merged([self._fold(core, messages, numbers, now_ms)])
        assert self._pool is not None
        others = [
            self._pool.submit(self._fold, core, messages, numbers, now_ms)
            for core, numbers in work[1:]
        ]
        try:
            first = self._fold(work[0][0], messages, work[0][1], now_ms)
        finally:
            parts = [other.result() for other in others]
        return self._merged([first, *parts])

    def _fold(
        self, core: int, batch: Sequence[Message], numbers: Sequence[int], now_ms: int
    ) -> _Share:
        """The messages `numbers` of the batch, processed by one Rust engine."""
        rules = self._rules
        assert rules is not None
        messages = [batch[number] for number in numbers]
        values = [message.value for message in messages]
        partitions = [message.source.partition for message in messages]
        carried: dict[int, Carried | str] = {}
        decided: dict[tuple[int, int], tuple[str, str, str, int]] = {}
        replaced: dict[int, tuple[str, str, bytes]] = {}
        engine = self._cores[core]
        while True:
            outcome = engine.process(values, partitions, now_ms, decided, replaced)
            if outcome[0] == "done":
                break
            _, undecided, unread = outcome
            for number in unread:
                replaced[number] = _reread(values[number])
            for number, index in undecided:
                raw = _carried(carried, values, number)
                assert not isinstance(raw, str)  # it was read
                decided[(number, index)] = _judged(rules, raw.measurements[index], now_ms, self)
        _, deltas, rejected, forwards, (accepted, duplicates, newest, judged) = outcome
        rejections = [
            (numbers[item[0]], self._rejected(messages, carried, values, *item))
            for item in rejected
        ]
        forwarded = []
        for partition, number, index, account in forwards:
            raw = _carried(carried, values, number)
            assert not isinstance(raw, str)
            forwarded.append((numbers[number], partition, account, raw.measurements[index]))
        return _Share(
            [Delta(*delta) for delta in deltas],
            rejections[:judged],
            rejections[judged:],
            forwarded,
            accepted,
            duplicates,
            newest,
        )

    def _merged(self, shares: list[_Share]) -> Processed:
        """One outcome, as one engine holding every partition gives it: deltas by
        partition; verdicts in message order, then refused pieces by partition; forwards
        in message order."""
        deltas = sorted((d for s in shares for d in s.deltas), key=lambda d: d.partition)
        judged = heapq.merge(*(s.judged for s in shares), key=lambda item: item[0])
        refused = sorted(
            (item for s in shares for item in s.refused),
            key=lambda item: item[1].source.partition,
        )
        rejections = [r for _, r in judged] + [r for _, r in refused]
        forwarded = heapq.merge(*(s.forwarded for s in shares), key=lambda item: item[0])
        by_partition: dict[int, list[tuple[str, Any]]] = {}
        for _, partition, account, measurement in forwarded:
            by_partition.setdefault(partition, []).append((account, measurement))
        sent = _forwards(by_partition) if by_partition else []
        stats = Stats(
            accepted=sum(s.accepted for s in shares),
            duplicates=sum(s.duplicates for s in shares),
            rejected=len(rejections),
            forwarded=sum(forward.count for forward in sent),
            newest_ts=max(s.newest for s in shares),
        )
        return Processed(deltas, rejections, sent, stats)

    def _rejected(
        self,
        messages: Sequence[Message],
        carried: dict[int, Carried | str],
        values: list[bytes | None],
        number: int,
        index: int | None,
        field: str,
        reason: str,
    ) -> Rejected:
        message = messages[number]
        if index is None:
            key = message.key.decode(errors="replace") if message.key else None
            raw = message.value.decode(errors="replace") if message.value else None
            return Rejected(key, "value", reason, raw, message.source)
        read = _carried(carried, values, number)
        assert not isinstance(read, str)
        measurement = read.measurements[index]
        account = measurement.get("account") if isinstance(measurement, dict) else None
        if reason.startswith(_WORDED):
            reason = self._worded(reason[1:], account)
        return Rejected(
            account if isinstance(account, str) else None,
            field,
            reason,
            measurement,
            message.source,
            index if read.envelope else None,
        )

    def _worded(self, marker: str, account: Any) -> str:
        """The reasons of `ReferenceEngine` that quote an account, worded in Python."""
        kind, *numbers = marker.split("|")
        first, *rest = (int(number) for number in numbers)
        limits = self.limits
        if kind == "full":
            return (
                f"account {account!r} has more than {first:,} "
                "measurements in this hour: its de-duplication memory is full"
            )
        start = rest[0]
        if kind == "delta":
            return (
                f"the usage of account {account!r} for the hour starting {start} "
                f"(epoch ms) in this batch would take {first:,} bytes of a delta message, "
                f"more than the {limits.max_delta_bytes:,} one Kafka message holds: not counted"
            )
        return (
            f"the usage record of account {account!r} for the hour starting {start} "
            f"(epoch ms) would grow to {first:,} bytes, more than the "
            f"{limits.max_segment_bytes:,} one Kafka message holds: not counted"
        )

    # --- retention, snapshots, recovery ------------------------------------------------

    def expire(self, partitions: Iterable[int] | None = None) -> list[Delta]:
        chosen = None if partitions is None else list(partitions)
        found: list[Delta] = []
        for core in self._cores:
            mine = None if chosen is None else [p for p in chosen if self._core(p) is core]
            if mine is None or mine:
                found.extend(Delta(*delta) for delta in core.expire(mine))
        return sorted(found, key=lambda delta: delta.partition)

    def snapshot(self, partition: int) -> SnapshotRound:
        seq, records, (marker_key, marker), obsolete = self._core(partition).snapshot(partition)
        return SnapshotRound(
            partition,
            seq,
            [SnapshotRecord(partition, key, record) for key, record in records],
            SnapshotRecord(partition, marker_key, marker),
            obsolete,
        )

    def confirm_snapshot(self, round_: SnapshotRound) -> None:
        self._core(round_.partition).confirm_snapshot(round_.partition, round_.seq, round_.obsolete)

    def recover(self, key: bytes, value: bytes | None) -> None:
        try:
            self._record_core(key).recover(key, value)
        except ValueError as exc:
            if not wire.is_delta_key(key):
                raise self._explained_record(key, value, exc) from None
            if value is not None:
                raise self._explained_delta(value, exc) from None
            wire.delta_partition(key)  # raises the reference's WireError
            raise wire.WireError("delta key", str(exc)) from None

    def restore(self, key: bytes, value: bytes | None) -> None:
        try:
            self._record_core(key).restore(key, value)
        except ValueError as exc:
            raise self._explained_record(key, value, exc) from None

    def apply(self, value: bytes) -> Applied:
        try:
            return Applied(*self._core(_delta_partition(value)).apply(value))
        except ValueError as exc:
            raise self._explained_delta(value, exc) from None

    def _record_core(self, key: bytes) -> Any:
        """The engine holding the partition of a usage log record (a delta, a marker or an
        account-hour's segment); the first for a key that names none (it explains it)."""
        try:
            if wire.is_delta_key(key):
                return self._core(wire.delta_partition(key))
            if key.startswith(wire.MARKER_PREFIX):
                return self._core(int(key[len(wire.MARKER_PREFIX) :]))
            return self._core_of(split_key(key)[0])
        except (ValueError, wire.WireError):
            return self._cores[0]

    def _explained_delta(self, value: bytes, exc: ValueError) -> wire.WireError:
        """The reference's error for a delta the Rust reader refused."""
        try:
            message = wire.decode_delta(value)
            for account, slots in message.accounts.items():
                if partition_for(account, self.partitions) != message.partition:
                    return wire.WireError(
                        f"delta.accounts[{account!r}]",
                        f"the account does not live on partition {message.partition}",
                    )
                for slot, document in slots.items():
                    wire.decode_piece(document, f"delta.accounts[{account!r}][{slot}]")
        except wire.WireError as error:
            return error
        return wire.WireError("delta", f"the native engine cannot read it: {exc}")

    def _explained_record(self, key: bytes, value: bytes | None, exc: ValueError) -> wire.WireError:
        """The reference's error for a snapshot record the Rust reader refused."""
        try:
            record = wire.decode_snapshot(key, value)
        except wire.WireError as error:
            return error
        if isinstance(record, wire.Segment):
            partition = partition_for(record.account, self.partitions)
            if record.partition != partition:
                return wire.WireError(
                    "segment.partition",
                    f"account {record.account!r} lives on partition {partition}, "
                    f"not {record.partition}",
                )
        return wire.WireError("snapshot", f"the native engine cannot read it: {exc}")

    def next_seq(self, partition: int) -> int:
        seq: int = self._core(partition).next_seq(partition)
        return seq

    def revoke(self, partition: int) -> None:
        self._core(partition).revoke(partition)

    # --- reads -----------------------------------------------------------------------

    def query(
        self,
        account: str,
        aggregations: Iterable[str],
        start: int,
        end: int,
        bucket_ms: int | None = None,
    ) -> dict[tuple[str, int], UsageState]:
        if bucket_ms is not None and bucket_ms <= 0:
            raise ValueError(f"bucket_ms must be positive or None, not {bucket_ms}")
        rows = self._core_of(account).query(
            account, list(aggregations), start, end, bucket_ms, False
        )
        return {(row[0], row[2]): _state(*row[3:]) for row in rows}

    def query_segments(
        self,
        account: str,
        aggregations: Iterable[str],
        start: int,
        end: int,
        bucket_ms: int | None = None,
    ) -> dict[tuple[str, str, int], UsageState]:
        if bucket_ms is not None and bucket_ms <= 0:
            raise ValueError(f"bucket_ms must be positive or None, not {bucket_ms}")
        rows = self._core_of(account).query(
            account, list(aggregations), start, end, bucket_ms, True
        )
        return {(row[0], row[1], row[2]): _state(*row[3:]) for row in rows}

    def period_segment_values(
        self,
        account: str,
        aggregations: Mapping[str, AggregationFunction],
        start: int,
        end: int,
    ) -> dict[tuple[str, str], Decimal | None]:
        return segment_values(self.query_segments(account, aggregations, start, end), aggregations)

    def period_values(
        self,
        account: str,
        aggregations: Mapping[str, AggregationFunction],
        start: int,
        end: int,
    ) -> dict[str, Decimal | None]:
        # A bill run asks this for every account: each value straight from its row, without
        # the UsageState (and Decimals) `query` would make of it.
        rows = self._core_of(account).query(account, list(aggregations), start, end, None, False)
        found = {row[0]: row for row in rows if row[2] == 0}  # the keys `query` reads
        return {code: _value(found.get(code), fn) for code, fn in aggregations.items()}

    def accounts(self, partitions: Iterable[int], start: int, end: int) -> list[str]:
        chosen = list(partitions)
        found: set[str] = set()
        for core in self._cores:
            mine = [p for p in chosen if self._core(p) is core]
            if mine:
                found.update(core.accounts(mine, start, end))
        return sorted(found)

    def account_hours(self) -> int:
        """Account-hours that hold usage (for benchmarks)."""
        return sum(int(hours) for hours in self._each("account_hours"))


class _Share(NamedTuple):
    """What one Rust engine made of its share of a batch (message numbers of the batch)."""

    deltas: list[Delta]
    judged: list[tuple[int, Rejected]]  # in message order
    refused: list[tuple[int, Rejected]]  # by partition
    forwarded: list[tuple[int, int, str, Any]]  # (message, partition, account, measurement)
    accepted: int
    duplicates: int
    newest: int


_PARTITION = b'"partition":'


def _delta_partition(value: bytes) -> int:
    """The partition a delta message names (its last top-level member but `seq` and `v`:
    keys are sorted); 0 when it names none readably (that engine then explains why)."""
    at = value.rfind(_PARTITION)
    if at < 0:
        return 0
    digits = value[at + len(_PARTITION) : at + len(_PARTITION) + 12].split(b",", 1)[0]
    return int(digits) if digits.isdigit() else 0


def _catalog_spec(catalog: Catalog, rules: CatalogRules) -> bytes:
    """The compiled catalog for the Rust side: each meter's rules and the fold plan."""
    meters = []
    for code, meter_rules in rules.meters.items():
        broken = meter_rules.broken
        meters.append(
            {
                "code": code,
                "fields": {name: sorted(codes) for name, codes in meter_rules.fields.items()},
                "derived_codes": sorted(meter_rules.derived_codes),
                "required": [
                    [path, field, f"required {category} field {field!r} missing"]
                    for path, field, category in meter_rules.required
                ],
                "broken": None if broken is None else [broken.field, broken.reason],
                "derived": [
                    [field, name, expression.text]
                    for field, name, expression in meter_rules.derived
                ],
            }
        )
    plan = [
        {
            "meter": meter,
            "targets": [
                {
                    "field": target.field,
                    "numeric": target.numeric,
                    "distinct": target.distinct,
                    "cells": [
                        [key[0], key[1], kind, _route_spec(route)]
                        for key, kind, route in target.cells
                    ],
                }
                for target in targets
            ],
        }
        for meter, targets in compile_plan(catalog).items()
    ]
    return orjson.dumps({"meters": meters, "plan": plan})


def _route_spec(route: Route | None) -> dict[str, Any] | None:
    if route is None:
        return None
    return {
        "filters": [[field, keep, sorted(values)] for field, keep, values in route.filters],
        "segments": [
            [segment, [list(c) for c in conditions]] for segment, conditions in route.segments
        ],
        "default": route.default,
    }


def _carried(
    cache: dict[int, Carried | str], values: list[bytes | None], number: int
) -> Carried | str:
    found = cache.get(number)
    if found is None:
        found = cache[number] = measurements_of(values[number])
    return found


def _reread(value: bytes | None) -> tuple[str, str, bytes]:
    """A message the Rust reader refused: Python's reason, or the document re-encoded."""
    carried = measurements_of(value)
    if isinstance(carried, str):
        return ("reject", carried, b"")
    assert value is not None  # it carried something
    try:
        return ("replace", "", encode_json(decode_json(value)))
    except Exception as exc:  # e.g. a lone surrogate: no UTF-8 for it
        return ("reject", f"internal error: {exc!r}", b"")


def _judged(
    rules: CatalogRules, raw: Any, now_ms: int, engine: NativeEngine
) -> tuple[str, str, str, int]:
    """The reference validator's verdict on a measurement the Rust side left to it."""
    try:
        verdict = rules.validate(raw, now_ms, engine.horizon)
    except Exception as exc:  # a bug must cost one measurement, not the stream
        return ("reject", "measurement", f"internal error: {exc!r}", 0)
    if isinstance(verdict, Rejection):
        return ("reject", verdict.field, verdict.reason, 0)
    return ("ts", "", "", verdict.ts)


def _number(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


_ROW_READERS: dict[AggregationFunction, Callable[[Any], Decimal | None]] = {
    AggregationFunction.SUM: lambda row: _number(row[4]),
    AggregationFunction.MIN: lambda row: _number(row[5]),
    AggregationFunction.MAX: lambda row: _number(row[6]),
    AggregationFunction.COUNT: lambda row: Decimal(row[3]),
    AggregationFunction.MEAN: lambda row: value(_state(*row[3:]), AggregationFunction.MEAN),
    AggregationFunction.LATEST: lambda row: None if row[7] is None else _number(row[8]),
    AggregationFunction.UNIQUE: lambda row: Decimal(len(frozenset(row[9]))),
}


def _value(row: Any, function: AggregationFunction) -> Decimal | None:
    """`value(_state(*row[3:]), function)` of a query row (None: no row), reading only the
    part of the row the function needs."""
    if row is None or not row[3]:
        return None
    return _ROW_READERS[function](row)


def _state(
    count: int,
    sum_: str | None,
    min_: str | None,
    max_: str | None,
    latest_ts: int | None,
    latest: str | None,
    unique: list[str],
) -> UsageState:
    return UsageState(
        count,
        _number(sum_),
        _number(min_),
        _number(max_),
        None if latest_ts is None or latest is None else (latest_ts, Decimal(latest)),
        frozenset(unique),
    )


__all__ = ["NativeEngine"]

if TYPE_CHECKING:  # mypy checks that the native engine keeps to the contract
    _contract: UsageEngine = NativeEngine(1)
