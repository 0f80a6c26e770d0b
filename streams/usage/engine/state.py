"""The reference engine's state in memory: cells in windows per account, uids per hour.

- A cell is what one window knows for one aggregation (and segment): a tuple
  (count, sum, min, max, latest, distinct values) in which only the parts its function
  needs are set (SUM and MEAN: count and sum; MIN: count and min; ...). Merging follows
  `streams.usage.merge`.
- `AccountUsage`: the windows an account actually has, as sorted window starts (the
  index every read bisects) and the cells of each window.
- `PartitionState`: the accounts of one partition, their uid hashes by hour slot (the
  de-duplication memory, dropped slot by slot: a `uids.UidMemory`, in Python dicts or a
  local RocksDB), and the partition's seq bookkeeping.

Long-lived state is made of tuples, dicts, ints, strings and Decimals only: once the
garbage collector has seen that a tuple or dict holds nothing but such atoms it stops
tracking it, so a large state costs nothing at each collection (slotted objects and sets
would be scanned at every full collection, which cost more than the fold itself).
Distinct values and uid hashes (`uids.MemoryUids`) are dicts with None values for that
reason.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, insort
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from streams.clock import HOUR_MS
from streams.schemas.numbers import EXACT
from streams.usage.engine.uids import MemoryUids, UidMemory
from streams.usage.state import UsageState, canonical

UNSEGMENTED = ""  # the segment of every aggregation until segmented aggregations exist
CellKey = tuple[str, str]  # (aggregation code, segment)
# (count >= 1, sum, min, max, (latest ts, latest value), distinct values)
Cell = tuple[
    int,
    Decimal | None,
    Decimal | None,
    Decimal | None,
    tuple[int, Decimal] | None,
    dict[str, None] | None,
]
Cells = dict[CellKey, Cell]
WindowCells = dict[int, Cells]  # window start (epoch ms) -> cells
SegmentKey = tuple[str, int]  # (account, hour slot)
UNKNOWN: None = None  # a segment size bound not known: measure it exactly when it matters
ALWAYS_EXACT = -1  # a segment whose size is measured exactly on every growth


def merge_cells(a: Cell, b: Cell) -> Cell:
    """The cell of both measurement sets (disjoint by uid). `a`'s distinct values are
    updated in place and `b`'s may be taken over: the caller owns both."""
    count, sum_, min_, max_, latest, unique = a
    b_count, b_sum, b_min, b_max, b_latest, b_unique = b
    if b_unique:
        if unique is None:
            unique = b_unique
        else:
            unique.update(b_unique)
    if b_sum is not None:
        sum_ = b_sum if sum_ is None else EXACT.add(sum_, b_sum)
    if b_min is not None and (min_ is None or b_min < min_):
        min_ = b_min
    if b_max is not None and (max_ is None or b_max > max_):
        max_ = b_max
    if b_latest is not None and (latest is None or b_latest > latest):
        latest = b_latest
    return count + b_count, sum_, min_, max_, latest, unique


def copy_cell(cell: Cell) -> Cell:
    count, sum_, min_, max_, latest, unique = cell
    return count, sum_, min_, max_, latest, None if unique is None else dict(unique)


def cell_state(cell: Cell) -> UsageState:
    """The `UsageState` of a cell, numbers canonical (e.g. for a query's answer)."""
    count, sum_, min_, max_, latest, unique = cell
    return UsageState(
        count,
        None if sum_ is None else canonical(sum_),
        None if min_ is None else canonical(min_),
        None if max_ is None else canonical(max_),
        None if latest is None else (latest[0], canonical(latest[1])),
        frozenset(unique) if unique else frozenset(),
    )


class AccountUsage:
    """The windows one account has: sorted starts (the index) and each window's cells."""

    __slots__ = ("starts", "windows")

    def __init__(self) -> None:
        self.starts = array("q")
        self.windows: WindowCells = {}

    def between(self, start: int, end: int) -> Iterator[tuple[int, Cells]]:
        """The windows starting in [start, end), in order: bisect, never a scan of hours."""
        starts = self.starts
        windows = self.windows
        for window in starts[bisect_left(starts, start) : bisect_left(starts, end)]:
            yield window, windows[window]

    def has_any(self, start: int, end: int) -> bool:
        index = bisect_left(self.starts, start)
        return index < len(self.starts) and self.starts[index] < end

    def in_slot(self, slot: int) -> WindowCells:
        return dict(self.between(slot * HOUR_MS, (slot + 1) * HOUR_MS))

    def drop(self, starts: list[int]) -> None:
        """Remove these windows (each must exist)."""
        gone = set(starts)
        for start in gone:
            del self.windows[start]
        self.starts = array("q", (start for start in self.starts if start not in gone))


@dataclass
class PartitionState:
    """One partition's usage, de-duplication memory and delta bookkeeping.

    uids      the uid hashes of each account-hour (the de-duplication memory)
    sizes     hour slot -> account -> an upper bound of the segment's bytes, UNKNOWN or
              ALWAYS_EXACT (see `ReferenceEngine._refusal`)
    seq       the highest seq known (produced, applied or seen): next_seq is seq + 1
    complete  every delta with seq <= complete was applied here in full (a seq whose
              later chunks never came, because a later seq followed, counts as complete);
              a snapshot segment no newer than that holds nothing new for this replica
    floor     every delta with seq <= floor is reflected in the snapshot topic
    pending   snapshot seq of restored segments newer than the floor: a delta with seq
              <= it is already inside that segment and skips it
    dirty     segments changed since the last snapshot round
    unconfirmed  segments of a snapshot round not confirmed yet (written again if it failed)
    seen      keys of delta messages since the last snapshot round (to tombstone), True
              for those applied here (or produced here): a delta met again is a replay
    newest    the newest measurement ts folded into this partition (retention's clock)
    expired   (uids_before, windows_before) hour slots of the last expiry applied
    """

    accounts: dict[str, AccountUsage] = field(default_factory=dict)
    uids: UidMemory = field(default_factory=MemoryUids)
    sizes: dict[int, dict[str, int | None]] = field(default_factory=dict)
    seq: int = 0
    complete: int = 0
    floor: int = 0
    pending: dict[SegmentKey, int] = field(default_factory=dict)
    dirty: set[SegmentKey] = field(default_factory=set)
    unconfirmed: set[SegmentKey] = field(default_factory=set)
    seen: dict[bytes, bool] = field(default_factory=dict)
    newest: int = 0
    expired: tuple[int, int] = (0, 0)

    def first_uid(self, account: str, slot: int) -> None:
        """A segment is about to remember its first uid: its size bound starts (unknown
        if it has windows)."""
        usage = self.accounts.get(account)
        known = usage is None or not usage.has_any(slot * HOUR_MS, (slot + 1) * HOUR_MS)
        self.sizes.setdefault(slot, {})[account] = 0 if known else UNKNOWN

    def size(self, account: str, slot: int) -> int | None:
        sizes = self.sizes.get(slot)
        return UNKNOWN if sizes is None else sizes.get(account, UNKNOWN)

    def set_size(self, account: str, slot: int, size: int | None) -> None:
        sizes = self.sizes.get(slot)
        if sizes is not None and account in sizes:
            sizes[account] = size

    def forget_uids(self, account: str, slot: int, hashes: list[int]) -> None:
        """Take back uids remembered for measurements that were not counted after all."""
        if not self.uids.count(account, slot):
            return
        self.uids.forget(account, slot, hashes)
        if not self.uids.count(account, slot):
            self._drop_hashes(account, slot)

    def _drop_hashes(self, account: str, slot: int) -> None:
        self.uids.drop(account, slot)
        sizes = self.sizes.get(slot)
        if sizes is not None:
            sizes.pop(account, None)
            if not sizes:
                del self.sizes[slot]

    def merge(self, account: str, slot: int, windows: WindowCells, hashes: list[int]) -> None:
        """Add one account-hour's share of a delta; its cells are taken over, not copied."""
        if windows:
            usage = self.accounts.get(account)
            if usage is None:
                usage = self.accounts[account] = AccountUsage()
            known = usage.windows
            for start, cells in windows.items():
                target = known.get(start)
                if target is None:
                    known[start] = cells
                    insort(usage.starts, start)
                    continue
                for key, cell in cells.items():
                    existing = target.get(key)
                    target[key] = cell if existing is None else merge_cells(existing, cell)
        if hashes:
            if not self.uids.count(account, slot):
                self.first_uid(account, slot)
            self.uids.merge(account, slot, hashes)
        self.dirty.add((account, slot))

    def replace(self, account: str, slot: int, windows: WindowCells, hashes: list[int]) -> None:
        """Set one segment to exactly this content (a snapshot record): it is not dirty."""
        self.remove(account, slot)
        self.merge(account, slot, windows, hashes)
        self.dirty.discard((account, slot))

    def remove(self, account: str, slot: int) -> None:
        """Delete one segment: its windows and its uids."""
        usage = self.accounts.get(account)
        if usage is not None:
            usage.drop(list(usage.in_slot(slot)))
            if not usage.starts:
                del self.accounts[account]
        self._drop_hashes(account, slot)
        self.dirty.add((account, slot))

    def segment(self, account: str, slot: int) -> tuple[WindowCells, Collection[int]]:
        usage = self.accounts.get(account)
        windows = {} if usage is None else usage.in_slot(slot)
        return windows, self.uids.hashes(account, slot)

    def applied(self, seq: int, chunk: int, chunks: int) -> None:
        """Delta message `chunk` of `chunks` of `seq` is applied (or was produced here)."""
        self.complete = max(self.complete, seq if chunk == chunks - 1 else seq - 1)

    def skips(self, account: str, slot: int, seq: int) -> bool:
        """A restored segment already holds what a delta of `seq` would add to it."""
        return bool(self.pending) and self.pending.get((account, slot), 0) >= seq

    def raise_floor(self, floor: int) -> None:
        self.floor = max(self.floor, floor)
        self.seq = max(self.seq, self.floor)
        self.pending = {key: seq for key, seq in self.pending.items() if seq > self.floor}

    def expire(self, seq: int, uids_before: int, windows_before: int) -> None:
        """Drop uids of hour slots before `uids_before` and windows of slots before
        `windows_before` (a segment restored at a seq >= `seq` already reflects this)."""
        for slot in sorted(s for s in self.uids.slots() if s < uids_before):
            for account in self.uids.accounts(slot):
                if not self.skips(account, slot, seq):
                    self._drop_hashes(account, slot)
                    self.dirty.add((account, slot))
        limit = windows_before * HOUR_MS
        for account in list(self.accounts):
            usage = self.accounts[account]
            if usage.starts[0] >= limit:
                continue
            gone = [
                start
                for start in usage.starts[: bisect_left(usage.starts, limit)]
                if not self.skips(account, start // HOUR_MS, seq)
            ]
            usage.drop(gone)
            self.dirty.update((account, start // HOUR_MS) for start in gone)
            if not usage.starts:
                del self.accounts[account]
        self.expired = max(self.expired[0], uids_before), max(self.expired[1], windows_before)

    def has_expired(self, uids_before: int, windows_before: int) -> bool:
        """Whether `expire` with these thresholds would drop anything."""
        if any(slot < uids_before for slot in self.uids.slots()):
            return True
        limit = windows_before * HOUR_MS
        return any(usage.starts[0] < limit for usage in self.accounts.values())
