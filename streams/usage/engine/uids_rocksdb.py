"""The de-duplication memory in a local RocksDB (`METERLINE_STORE=rocksdb`): bounded memory.

`RocksUidStore` is one RocksDB per worker, under `Settings.data_dir`, with explicit
memory budgets (memtables, block cache); `RocksUids` is one partition's `UidMemory` in
it, one key per uid. The heap keeps only a count per account-hour (slot -> account ->
count: the `max_uids_per_slot` bound and which slots hold uids, without a disk read), so
the uids of 35 days may outgrow RAM.

The RocksDB is a cache of the usage log, never a source of truth: `RocksUidStore` wipes
its directory when it opens (what a previous run left may be older or newer than the
log: it is not trusted), and recovery rebuilds it from the log like the rest of the
state. So it needs no write-ahead log and no fsync.

Keys: partition (4 bytes) | hour slot (8 bytes, offset so that negative slots sort
first) | account (UTF-8, which never holds the byte 0xFF) | 0xFF | uid hash (8 bytes,
big-endian); values are empty. An account-hour's uids are one contiguous key range, and
a partition's too, so dropping either is one range deletion.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import cast

from rocksdict import (
    BlockBasedOptions,
    Cache,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from streams.usage.engine.uids import NO_HASHES, UidMemory

MB = 1024 * 1024
Key = str | int | float | bytes | bool  # what rocksdict takes (raw mode: bytes only)
_HEAD = struct.Struct(">IQ")  # partition, hour slot + SLOT_OFFSET
_UID = struct.Struct(">Q")
_PARTITION = struct.Struct(">I")
SLOT_OFFSET = 1 << 63
END = b"\xff"  # ends an account in a key: UTF-8 never holds this byte
PAST_SEGMENT = b"\xff" * (_UID.size + 1)  # after every uid key of a segment's prefix


class UidStoreInUse(RuntimeError):
    """Another worker (or store) holds the RocksDB's lock: its directory is not ours to wipe."""


class RocksUidStore:
    """One local RocksDB for the uids of every partition of a worker, with its memory
    budgets set explicitly: memtables (write buffers) of `write_buffer_mb` in all, and a
    block cache of `block_cache_mb` that also holds the index and bloom filter blocks
    (otherwise they live outside any budget, and grow with the data).

    Opening wipes `path` (see the module docstring: the log is the truth). A worker owns
    its data directory, as faust's own stores require; RocksDB's lock refuses a second
    process. Call it with a partition for that partition's `UidMemory` (a `UidFactory`).
    """

    def __init__(self, path: Path, write_buffer_mb: int, block_cache_mb: int) -> None:
        if path.exists():
            try:
                Rdict.destroy(str(path))  # takes RocksDB's lock first
            except Exception as exc:  # rocksdict raises a bare Exception
                raise UidStoreInUse(
                    f"the usage engine's uid memory {path} is in use (one worker per "
                    f"METERLINE_DATA_DIR): {exc}"
                ) from exc
            shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        # two memtables of half the budget each: one filling while the other is flushed
        options.set_write_buffer_size(write_buffer_mb * MB // 2)
        options.set_max_write_buffer_number(2)
        options.set_db_write_buffer_size(write_buffer_mb * MB)
        table = BlockBasedOptions()
        table.set_block_cache(Cache(block_cache_mb * MB))
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_bloom_filter(10, False)  # most lookups are of new uids: absent keys
        options.set_block_based_table_factory(table)
        self.path = path
        self.db = Rdict(str(path), options)
        writes = WriteOptions()
        # a cache of the log: nothing to replay after a crash (the stub calls it a method)
        writes.disable_wal = True  # type: ignore[method-assign,assignment]
        self.db.set_write_options(writes)

    def __call__(self, partition: int) -> UidMemory:
        return RocksUids(self, partition)

    def close(self) -> None:
        self.db.close()


class RocksUids:
    """`UidMemory` of one partition in a `RocksUidStore`; only a count per account-hour
    stays in the heap (slot -> account -> count)."""

    __slots__ = ("_counts", "_db", "_partition")

    def __init__(self, store: RocksUidStore, partition: int) -> None:
        self._db = store.db
        self._partition = partition
        self._counts: dict[int, dict[str, int]] = {}
        self.clear()  # a partition revoked and assigned again starts empty

    def _prefix(self, account: str, slot: int) -> bytes:
        return _HEAD.pack(self._partition, slot + SLOT_OFFSET) + account.encode() + END

    def check(self, account: str, slot: int, uid: int) -> int:
        held = self.count(account, slot)
        if held and self._prefix(account, slot) + _UID.pack(uid) in self._db:
            return -1
        return held

    def add(self, account: str, slot: int, uid: int) -> None:
        self._db.put(self._prefix(account, slot) + _UID.pack(uid), b"")
        self._grow(account, slot, 1)

    def merge(self, account: str, slot: int, uids: Iterable[int]) -> None:
        prefix = self._prefix(account, slot)
        keys: list[Key] = [prefix + _UID.pack(uid) for uid in dict.fromkeys(uids)]
        if not keys:
            return
        if self.count(account, slot):
            found = self._db.get(keys)  # one multi-get
            assert isinstance(found, list)
            keys = [key for key, value in zip(keys, found, strict=True) if value is None]
        batch = WriteBatch(raw_mode=True)
        for key in keys:
            batch.put(key, b"")
        self._db.write(batch)
        self._grow(account, slot, len(keys))

    def _grow(self, account: str, slot: int, by: int) -> None:
        accounts = self._counts.get(slot)
        if accounts is None:
            accounts = self._counts[slot] = {}
        accounts[account] = accounts.get(account, 0) + by

    def forget(self, account: str, slot: int, uids: Iterable[int]) -> None:
        held = self.count(account, slot)
        if not held:
            return
        prefix = self._prefix(account, slot)
        for uid in dict.fromkeys(uids):
            key = prefix + _UID.pack(uid)
            if key in self._db:
                self._db.delete(key)
                held -= 1
        if held:
            self._counts[slot][account] = held
        else:
            self.drop(account, slot)

    def drop(self, account: str, slot: int) -> None:
        accounts = self._counts.get(slot)
        if accounts is None or accounts.pop(account, None) is None:
            return
        if not accounts:
            del self._counts[slot]
        prefix = self._prefix(account, slot)
        self._db.delete_range(prefix, prefix + PAST_SEGMENT)

    def count(self, account: str, slot: int) -> int:
        accounts = self._counts.get(slot)
        return 0 if accounts is None else accounts.get(account, 0)

    def hashes(self, account: str, slot: int) -> Collection[int]:
        if not self.count(account, slot):
            return NO_HASHES
        prefix = self._prefix(account, slot)
        bounds = ReadOptions()
        bounds.set_iterate_upper_bound(prefix + PAST_SEGMENT)
        # a snapshot's scan must not evict the blocks lookups need (the stub lacks the flag)
        bounds.fill_cache(False)  # type: ignore[call-arg]
        start = len(prefix)
        return [
            _UID.unpack_from(cast(bytes, key), start)[0]
            for key in self._db.keys(from_key=prefix, read_opt=bounds)
        ]

    def slots(self) -> Collection[int]:
        return self._counts.keys()

    def accounts(self, slot: int) -> list[str]:
        return list(self._counts.get(slot, ()))

    def clear(self) -> None:
        self._counts = {}
        self._db.delete_range(
            _PARTITION.pack(self._partition), _PARTITION.pack(self._partition + 1)
        )
