"""The pure-Python usage engine: the reference every other implementation is tested against.

`process` in three steps, per batch:
  1. judge every measurement on its own (decode, validate against its meter, the
     account's partition, locked periods, de-duplication by (meter, uid) per account-hour)
     and fold each new one into this batch's piece of its account-hour;
  2. bound each piece (it must fit a delta message, its segment a snapshot record),
     dead-lettering the measurements of a piece that does not;
  3. per partition: the next seq, the pieces packed into delta messages, and the same
     pieces merged into the state by the code `apply` uses, so a replica that applies
     the deltas holds exactly this state.
An unexpected error costs the measurement it happened on, never the batch.

A batch keeps no decoded measurement beyond its judging (only message and index numbers),
so the garbage collector has little to scan; a refused measurement is decoded again to
be quoted in its dead letter.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from sys import intern
from typing import TYPE_CHECKING, Any

import orjson

from streams.clock import DAY_MS, HOUR_MS
from streams.partitioning import partition_for
from streams.schemas.catalog import AggregationFunction, Catalog
from streams.schemas.numbers import encode_json
from streams.usage.engine import wire
from streams.usage.engine.contract import (
    Applied,
    Delta,
    Forward,
    Limits,
    LockedPeriod,
    Processed,
    SnapshotRecord,
    SnapshotRound,
    Stats,
    UsageEngine,
    segment_values,
)
from streams.usage.engine.fold import Plan, accumulate, compile_plan
from streams.usage.engine.state import (
    ALWAYS_EXACT,
    UNKNOWN,
    UNSEGMENTED,
    Cell,
    PartitionState,
    WindowCells,
    cell_state,
    copy_cell,
    merge_cells,
)
from streams.usage.engine.uids import UidFactory, memory_uids
from streams.usage.metering import Message, Rejected, Windows, measurements_of
from streams.usage.state import UsageState, value
from streams.usage.validate import (
    DEFAULT_HORIZON,
    CatalogRules,
    Horizon,
    Rejection,
    ValidMeasurement,
    rules_for,
)

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 400  # Settings.usage_retention_days
# A segment's size bound grows by each merged piece's bytes plus this much per sum in it:
# merging sums of numbers written without exponent in at most WIDE_NUMBER characters
# never lengthens a sum by more. A piece with a wider sum makes the segment ALWAYS_EXACT.
SUM_SLACK = 96
WIDE_NUMBER = 40
SEGMENT_ENVELOPE = 256  # a segment record's members besides its pieces and account
FORWARD_BYTES = 512_000  # an envelope of forwarded measurements (the ingest API's bound)
FORWARD_COUNT = 1000


class _Piece:
    """One account-hour's share of a batch: its windows, the uids it adds, and which of
    the batch's measurements it holds, as (message index, index in the message)."""

    __slots__ = ("members", "newest", "uids", "windows")

    def __init__(self) -> None:
        self.windows: WindowCells = {}
        self.uids: list[int] = []
        self.members: list[tuple[int, int]] = []
        self.newest = 0


class ReferenceEngine:
    """`streams.usage.engine.contract.UsageEngine` in Python (see the package docstring).

    `pause_gc`: the cyclic garbage collector is paused while a batch is processed (and
    left as it was found). The engine makes no reference cycles, so nothing is lost,
    and a batch keeps enough objects alive to trigger full collections of the whole
    process again and again: they cost more than the fold itself.

    `uids`: where each partition keeps its de-duplication memory (`uids.UidFactory`):
    Python dicts by default, or a local RocksDB (`uids_rocksdb.RocksUidStore`) whose
    memory stays bounded however many uids it holds.
    """

    def __init__(
        self,
        partitions: int,
        catalog: Catalog | None = None,
        horizon: Horizon = DEFAULT_HORIZON,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        limits: Limits = Limits(),
        pause_gc: bool = True,
        uids: UidFactory = memory_uids,
    ) -> None:
        self.parallel = False
        self.partitions = partitions
        self.pause_gc = pause_gc
        self.horizon = horizon
        self.retention_days = retention_days
        self.limits = limits
        self._uids = uids
        self._catalog: Catalog | None = None
        self._plan: Plan = {}
        self._boundaries: dict[str, tuple[int, ...]] = {}
        self._locked: dict[str, tuple[LockedPeriod, ...]] = {}
        self._states: dict[int, PartitionState] = {}
        if catalog is not None:
            self.set_catalog(catalog)

    # --- facts pushed in --------------------------------------------------------------

    def set_catalog(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._plan = compile_plan(catalog)

    def set_boundaries(self, account: str, boundaries: Iterable[int]) -> None:
        known = tuple(sorted(set(boundaries)))
        if known:
            self._boundaries[account] = known
        else:
            self._boundaries.pop(account, None)

    def set_locked(self, account: str, periods: Iterable[LockedPeriod]) -> None:
        known = tuple(periods)
        if known:
            self._locked[account] = known
        else:
            self._locked.pop(account, None)

    # --- process ---------------------------------------------------------------------

    def process(self, messages: Sequence[Message], now_ms: int) -> Processed:
        if self._catalog is None:
            raise RuntimeError("the engine has no catalog yet: call set_catalog() first")
        paused = self.pause_gc and gc.isenabled()
        if paused:
            gc.disable()
        try:
            batch = _Batch(self, rules_for(self._catalog), messages, now_ms)
            for number, message in enumerate(messages):
                batch.read(number, message)
            return batch.finish()
        finally:
            if paused:
                gc.enable()

    def _state(self, partition: int) -> PartitionState:
        state = self._states.get(partition)
        if state is None:
            state = self._states[partition] = PartitionState(uids=self._uids(partition))
        return state

    def _merge(
        self,
        state: PartitionState,
        account: str,
        slot: int,
        windows: WindowCells,
        hashes: list[int],
        growth: int | None,
    ) -> None:
        """Merge one piece (process and apply alike) and grow its segment's size bound."""
        state.merge(account, slot, windows, hashes)
        size = state.size(account, slot)
        if size is not UNKNOWN and size != ALWAYS_EXACT:
            state.set_size(account, slot, ALWAYS_EXACT if growth is None else size + growth)

    def _refusal(
        self,
        state: PartitionState,
        partition: int,
        account: str,
        slot: int,
        piece: bytes,
        growth: int | None,
    ) -> str | None:
        """Why an account-hour's piece may not be merged: it would not fit a delta message,
        or it would grow its segment past a snapshot record. A segment's size is measured
        exactly only when its upper bound (`PartitionState.sizes`) says it might not fit,
        so the decision is the same whatever the bound, and cheap while far from it."""
        limits = self.limits
        key = wire.json_key(account)
        needed = wire.ENVELOPE_BYTES + wire.entry_bytes(key, slot, piece)
        if needed > limits.max_delta_bytes:
            return (
                f"the usage of account {account!r} for the hour starting {slot * HOUR_MS} "
                f"(epoch ms) in this batch would take {needed:,} bytes of a delta message, "
                f"more than the {limits.max_delta_bytes:,} one Kafka message holds: not counted"
            )
        bound = state.size(account, slot)
        envelope = SEGMENT_ENVELOPE + len(key)
        if (
            bound is not UNKNOWN
            and bound != ALWAYS_EXACT
            and growth is not None
            and bound + envelope + growth <= limits.max_segment_bytes
        ):
            return None
        windows, hashes = state.segment(account, slot)
        exact = len(wire.segment_value(partition, account, slot, state.seq + 1, windows, hashes))
        if bound != ALWAYS_EXACT:
            state.set_size(account, slot, exact)
        if exact + len(piece) <= limits.max_segment_bytes:
            return None
        return (
            f"the usage record of account {account!r} for the hour starting {slot * HOUR_MS} "
            f"(epoch ms) would grow to {exact + len(piece):,} bytes, more than the "
            f"{limits.max_segment_bytes:,} one Kafka message holds: not counted"
        )

    # --- retention -------------------------------------------------------------------

    def expire(self, partitions: Iterable[int] | None = None) -> list[Delta]:
        out: list[Delta] = []
        for partition in sorted(self._states if partitions is None else partitions):
            state = self._states.get(partition)
            if state is None or not state.newest:
                continue
            newest_slot = state.newest // HOUR_MS
            uids_before = newest_slot - (self.horizon.past_ms + DAY_MS) // HOUR_MS
            windows_before = newest_slot - self.retention_days * 24
            if not state.has_expired(uids_before, windows_before):
                continue
            seq = state.seq + 1
            thresholds = (uids_before, windows_before)
            delta = wire.delta_value(partition, seq, 0, 1, state.newest, [], thresholds)
            state.expire(seq, uids_before, windows_before)
            key = wire.delta_key(partition, seq, 0)
            state.seq = seq
            state.applied(seq, 0, 1)
            state.seen[key] = True
            out.append(Delta(partition, seq, 0, 1, key, delta))
        return out

    # --- snapshots and recovery ------------------------------------------------------

    def snapshot(self, partition: int) -> SnapshotRound:
        state = self._state(partition)
        seq = state.seq
        records: list[SnapshotRecord] = []
        # segments of a round not confirmed yet are written again: it may have failed
        for account, slot in sorted(state.dirty | state.unconfirmed):
            windows, hashes = state.segment(account, slot)
            key = wire.segment_key(account, slot)
            if not windows and not hashes:
                records.append(SnapshotRecord(partition, key, None))
                continue
            record = wire.segment_value(partition, account, slot, seq, windows, hashes)
            if state.size(account, slot) != ALWAYS_EXACT:
                state.set_size(account, slot, len(record))
            records.append(SnapshotRecord(partition, key, record))
        state.unconfirmed |= state.dirty
        state.dirty = set()
        marker = wire.marker_value(partition, seq, state.newest, state.expired)
        marker_record = SnapshotRecord(partition, wire.marker_key(partition), marker)
        return SnapshotRound(partition, seq, records, marker_record, list(state.seen))

    def confirm_snapshot(self, round_: SnapshotRound) -> None:
        state = self._states.get(round_.partition)
        if state is None:
            return
        state.unconfirmed = set()
        for key in round_.obsolete:
            state.seen.pop(key, None)
        state.raise_floor(round_.seq)

    def recover(self, key: bytes, value: bytes | None) -> None:
        if not wire.is_delta_key(key):
            self.restore(key, value)
        elif value is not None:
            self.apply(value)
        else:  # a delta tombstoned after a snapshot round: nothing left to tombstone
            state = self._states.get(wire.delta_partition(key))
            if state is not None:
                state.seen.pop(key, None)

    def restore(self, key: bytes, value: bytes | None) -> None:
        record = wire.decode_snapshot(key, value)
        if record is None:
            return
        if isinstance(record, wire.Marker):
            state = self._state(record.partition)
            state.raise_floor(record.seq)
            state.newest = max(state.newest, record.newest)
            state.expired = (
                max(state.expired[0], record.expired[0]),
                max(state.expired[1], record.expired[1]),
            )
            return
        partition = partition_for(record.account, self.partitions)
        state = self._state(partition)
        segment = (record.account, record.slot)
        if isinstance(record, wire.Tombstone):
            state.remove(*segment)
            state.dirty.discard(segment)
            state.pending.pop(segment, None)
            return
        if record.partition != partition:
            raise wire.WireError(
                "segment.partition",
                f"account {record.account!r} lives on partition {partition}, "
                f"not {record.partition}",
            )
        state.seq = max(state.seq, record.seq)
        if record.seq < state.complete:
            return  # this replica applied deltas after the segment's: it is older
        state.replace(record.account, record.slot, record.windows, record.uids)
        state.dirty.discard(segment)  # the log holds it as it is now
        state.set_size(record.account, record.slot, len(value or b""))
        if record.seq > state.floor:
            state.pending[segment] = record.seq

    def apply(self, value: bytes) -> Applied:
        message = wire.decode_delta(value)
        state = self._state(message.partition)
        state.seq = max(state.seq, message.seq)
        # A replay is recognised by its key, not its position: a producer's retry can
        # write a chunk again after a later one, and compaction then keeps only the
        # later copy, so a reader may meet a seq's chunks out of order.
        if message.seq <= state.floor or state.seen.get(message.key):
            state.seen.setdefault(message.key, False)
            return Applied(message.partition, message.seq, message.chunk, False)
        pieces = []
        for account, slots in message.accounts.items():
            if partition_for(account, self.partitions) != message.partition:
                raise wire.WireError(
                    f"delta.accounts[{account!r}]",
                    f"the account does not live on partition {message.partition}",
                )
            for slot, document in slots.items():
                if state.skips(account, slot, message.seq):
                    continue
                where = f"delta.accounts[{account!r}][{slot}]"
                windows, hashes = wire.decode_piece(document, where)
                encoded = len(orjson.dumps(document, option=wire.SORTED))
                pieces.append((account, slot, windows, hashes, _growth(windows, encoded)))
        # Decoded in full before anything changes: a message that cannot be read
        # leaves the state as it was.
        state.seen[message.key] = True
        state.applied(message.seq, message.chunk, message.chunks)
        for account, slot, windows, hashes, growth in pieces:
            self._merge(state, account, slot, windows, hashes, growth)
        if message.expire is not None:
            state.expire(message.seq, *message.expire)
        state.newest = max(state.newest, message.newest)
        return Applied(message.partition, message.seq, message.chunk, True)

    def next_seq(self, partition: int) -> int:
        state = self._states.get(partition)
        return 1 if state is None else state.seq + 1

    def revoke(self, partition: int) -> None:
        state = self._states.pop(partition, None)
        if state is not None:
            state.uids.clear()

    # --- reads -----------------------------------------------------------------------

    def query(
        self,
        account: str,
        aggregations: Iterable[str],
        start: int,
        end: int,
        bucket_ms: int | None = None,
    ) -> dict[tuple[str, int], UsageState]:
        merged = self._merged(account, aggregations, start, end, bucket_ms, False)
        return {(code, bucket): cell_state(cell) for (code, _, bucket), cell in merged.items()}

    def query_segments(
        self,
        account: str,
        aggregations: Iterable[str],
        start: int,
        end: int,
        bucket_ms: int | None = None,
    ) -> dict[tuple[str, str, int], UsageState]:
        merged = self._merged(account, aggregations, start, end, bucket_ms, True)
        return {key: cell_state(cell) for key, cell in merged.items()}

    def _merged(
        self,
        account: str,
        aggregations: Iterable[str],
        start: int,
        end: int,
        bucket_ms: int | None,
        by_segment: bool,
    ) -> dict[tuple[str, str, int], Cell]:
        """Cells merged per (aggregation, segment or UNSEGMENTED for all, bucket)."""
        if bucket_ms is not None and bucket_ms <= 0:
            raise ValueError(f"bucket_ms must be positive or None, not {bucket_ms}")
        state = self._states.get(partition_for(account, self.partitions))
        usage = None if state is None else state.accounts.get(account)
        if usage is None:
            return {}
        wanted = set(aggregations)
        merged: dict[tuple[str, str, int], Cell] = {}
        for window, cells in usage.between(start, end):
            bucket = 0 if bucket_ms is None else window - window % bucket_ms
            for (code, segment), cell in cells.items():
                if code not in wanted:
                    continue
                key = (code, segment if by_segment else UNSEGMENTED, bucket)
                total = merged.get(key)
                merged[key] = (
                    copy_cell(cell) if total is None else merge_cells(total, copy_cell(cell))
                )
        return merged

    def period_values(
        self,
        account: str,
        aggregations: Mapping[str, AggregationFunction],
        start: int,
        end: int,
    ) -> dict[str, Decimal | None]:
        states = self.query(account, aggregations, start, end)
        return {code: value(states.get((code, 0)), fn) for code, fn in aggregations.items()}

    def period_segment_values(
        self,
        account: str,
        aggregations: Mapping[str, AggregationFunction],
        start: int,
        end: int,
    ) -> dict[tuple[str, str], Decimal | None]:
        return segment_values(self.query_segments(account, aggregations, start, end), aggregations)

    def accounts(self, partitions: Iterable[int], start: int, end: int) -> list[str]:
        found: set[str] = set()
        for partition in partitions:
            state = self._states.get(partition)
            if state is not None:
                found.update(a for a, usage in state.accounts.items() if usage.has_any(start, end))
        return sorted(found)


class _Batch:
    """One `process` call: its verdicts so far, and its pieces."""

    def __init__(
        self, engine: ReferenceEngine, rules: CatalogRules, messages: Sequence[Message], now: int
    ) -> None:
        self.engine = engine
        self.rules = rules
        self.messages = messages
        self.now_ms = now
        known = engine._boundaries
        self.windows = Windows((lambda account: known.get(account, ())) if known else None)
        self.rejected: list[Rejected] = []
        self.forwards: dict[int, list[tuple[str, Any]]] = {}
        self.duplicates = 0
        self.pieces: dict[tuple[int, str, int], _Piece] = {}
        self.newest = 0

    def read(self, number: int, message: Message) -> None:
        carried = measurements_of(message.value)
        if isinstance(carried, str):
            key = message.key.decode(errors="replace") if message.key else None
            raw = message.value.decode(errors="replace") if message.value else None
            self.rejected.append(Rejected(key, "value", carried, raw, message.source))
            return
        for index, raw in enumerate(carried.measurements):
            try:
                verdict = self.judge(raw, message, number, index)
            except Exception as exc:  # a bug must cost one measurement, not the stream
                log.exception("measurement %s#%s failed", message.source, index)
                verdict = Rejection("measurement", f"internal error: {exc!r}")
            if verdict is not None:
                account = raw.get("account") if isinstance(raw, dict) else None
                self.rejected.append(
                    Rejected(
                        account if isinstance(account, str) else None,
                        verdict.field,
                        verdict.reason,
                        raw,
                        message.source,
                        index if carried.envelope else None,
                    )
                )

    def judge(self, raw: Any, message: Message, number: int, index: int) -> Rejection | None:
        """Judge one measurement; a new one is remembered and folded into its piece."""
        engine = self.engine
        verdict = self.rules.validate(raw, self.now_ms, engine.horizon)
        if isinstance(verdict, Rejection):
            return verdict
        account, ts = intern(verdict.account), verdict.ts  # one object in every key
        partition = partition_for(account, engine.partitions)
        if partition != message.source.partition:
            self.forwards.setdefault(partition, []).append((account, raw))
            return None
        periods = engine._locked.get(account)
        if periods is not None:
            for period in periods:
                if period.start <= ts < period.end:
                    return Rejection("ts", period.reason)
        slot = ts // HOUR_MS
        state = engine._states.get(partition) or engine._state(partition)
        uids = state.uids
        uid = wire.uid_hash(verdict.meter, verdict.uid)
        held = uids.check(account, slot, uid)
        if held < 0:
            self.duplicates += 1
            return None
        limit = engine.limits.max_uids_per_slot
        if held >= limit:
            return Rejection(
                "ts",
                f"account {account!r} has more than {limit:,} "
                "measurements in this hour: its de-duplication memory is full",
            )
        if not held:
            state.first_uid(account, slot)
        uids.add(account, slot, uid)
        if ts > self.newest:
            self.newest = ts
        piece = self.pieces.get((partition, account, slot))
        if piece is None:
            piece = self.pieces[(partition, account, slot)] = _Piece()
        piece.members.append((number, index))
        piece.uids.append(uid)
        if ts > piece.newest:
            piece.newest = ts
        try:
            self.fold(piece, verdict)
        except Exception as exc:
            log.exception("folding measurement %s#%s failed", message.source, index)
            self.unfold(piece, partition, len(piece.members) - 1, exc)
        return None

    def fold(self, piece: _Piece, measurement: ValidMeasurement) -> None:
        targets = self.engine._plan.get(measurement.meter)
        if not targets:
            return
        window = self.windows(measurement.account, measurement.ts)
        cells = piece.windows.get(window)
        if cells is None:
            cells = piece.windows[window] = {}
        accumulate(targets, cells, measurement)
        if not cells:  # none of the fields its aggregations target
            del piece.windows[window]

    def unfold(self, piece: _Piece, partition: int, failed: int, exc: Exception) -> None:
        """Take a measurement that failed to fold out of its piece, which is folded again
        from its other measurements: it is dead-lettered and its uid forgotten."""
        while True:
            member = piece.members.pop(failed)
            uid = piece.uids.pop(failed)
            raw, source, index = self.origin(member)
            account = raw["account"]
            slot = self.measurement(member).ts // HOUR_MS
            self.engine._state(partition).forget_uids(account, slot, [uid])
            reason = f"internal error: {exc!r}"
            self.rejected.append(Rejected(account, "measurement", reason, raw, source, index))
            piece.windows = {}
            try:
                for failed, member in enumerate(piece.members):  # noqa: B007
                    self.fold(piece, self.measurement(member))
                return
            except Exception as again:
                log.exception("folding measurement %s#%s failed", source, index)
                exc = again

    def origin(self, member: tuple[int, int]) -> tuple[Any, Any, int | None]:
        """A measurement as it was sent, where from, and its index for a dead letter."""
        message = self.messages[member[0]]
        carried = measurements_of(message.value)
        assert not isinstance(carried, str)  # it was read before
        index = member[1] if carried.envelope else None
        return carried.measurements[member[1]], message.source, index

    def measurement(self, member: tuple[int, int]) -> ValidMeasurement:
        verdict = self.rules.validate(self.origin(member)[0], self.now_ms, self.engine.horizon)
        assert isinstance(verdict, ValidMeasurement)  # it was valid before
        return verdict

    def finish(self) -> Processed:
        engine = self.engine
        accepted: dict[int, list[tuple[wire.Entry, _Piece, int | None]]] = {}
        for partition, account, slot in sorted(self.pieces):
            piece = self.pieces[(partition, account, slot)]
            if not piece.members:
                continue
            state = engine._state(partition)
            encoded = wire.encode_piece(piece.windows, piece.uids)
            growth = _growth(piece.windows, len(encoded))
            reason = engine._refusal(state, partition, account, slot, encoded, growth)
            if reason is not None:
                log.error("%s", reason)
                self.refuse(piece, partition, account, slot, reason)
                continue
            entry = wire.Entry(account, slot, encoded)
            accepted.setdefault(partition, []).append((entry, piece, growth))
        deltas: list[Delta] = []
        for partition, items in accepted.items():
            deltas.extend(self.commit(partition, items))
        count = sum(len(item[1].members) for items in accepted.values() for item in items)
        forwards = _forwards(self.forwards)
        stats = Stats(
            accepted=count,
            duplicates=self.duplicates,
            rejected=len(self.rejected),
            forwarded=sum(forward.count for forward in forwards),
            newest_ts=self.newest,
        )
        return Processed(deltas, self.rejected, forwards, stats)

    def refuse(self, piece: _Piece, partition: int, account: str, slot: int, reason: str) -> None:
        self.engine._state(partition).forget_uids(account, slot, piece.uids)
        for member in piece.members:
            raw, source, index = self.origin(member)
            self.rejected.append(Rejected(account, "measurement", reason, raw, source, index))

    def commit(
        self, partition: int, items: list[tuple[wire.Entry, _Piece, int | None]]
    ) -> list[Delta]:
        """The partition's next seq: its delta messages, and the pieces merged."""
        engine = self.engine
        state = engine._state(partition)
        seq = state.seq + 1
        newest = max(state.newest, *(piece.newest for _, piece, _ in items))
        chunks = wire.pack([item[0] for item in items], engine.limits.max_delta_bytes)
        deltas = []
        for chunk, entries in enumerate(chunks):
            key = wire.delta_key(partition, seq, chunk)
            delta = wire.delta_value(partition, seq, chunk, len(chunks), newest, entries)
            deltas.append(Delta(partition, seq, chunk, len(chunks), key, delta))
            state.seen[key] = True
        for entry, piece, growth in items:
            # its uids were remembered while judging
            engine._merge(state, entry.account, entry.slot, piece.windows, [], growth)
        state.seq, state.newest = seq, newest
        state.applied(seq, len(chunks) - 1, len(chunks))
        return deltas


def _growth(windows: WindowCells, encoded: int) -> int | None:
    """What merging a piece of `encoded` bytes adds to its segment at most (see SUM_SLACK);
    None if that is not bounded."""
    slack = wire.sum_slack(windows, SUM_SLACK, WIDE_NUMBER)
    return None if slack is None else encoded + slack


def _forwards(by_partition: dict[int, list[tuple[str, Any]]]) -> list[Forward]:
    """Envelopes of measurements bound for other partitions (numbers kept exact)."""
    out: list[Forward] = []
    for partition, items in sorted(by_partition.items()):
        envelope: list[bytes] = []
        size = 0
        first = ""
        for account, raw in items:
            encoded = encode_json(raw)
            if envelope and (size + len(encoded) > FORWARD_BYTES or len(envelope) >= FORWARD_COUNT):
                out.append(_envelope(partition, first, envelope))
                envelope, size = [], 0
            if not envelope:
                first = account
            envelope.append(encoded)
            size += len(encoded) + 1
        out.append(_envelope(partition, first, envelope))
    return out


def _envelope(partition: int, account: str, encoded: list[bytes]) -> Forward:
    value = b'{"measurements":[' + b",".join(encoded) + b"]}"
    return Forward(partition, account.encode(), value, len(encoded))


if TYPE_CHECKING:  # mypy checks that the reference keeps to the contract
    _contract: UsageEngine = ReferenceEngine(1)
