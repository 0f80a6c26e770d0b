"""The de-duplication memory of one partition: the uid hashes of each account-hour.

One interface (`UidMemory`), two implementations the engine's state is built with:

- `MemoryUids` (the default): Python dicts, slot -> account -> hashes. Fastest; the
  process holds every uid of the dedup horizon (35 days) in its heap.
- `uids_rocksdb.RocksUids`: one key per uid in a local RocksDB with explicit memtable
  and block cache budgets, so memory stays bounded when the uids of 35 days outgrow
  RAM (`METERLINE_STORE=rocksdb`). A cache of the usage log, wiped when it opens.

The engine takes a `UidFactory` (partition -> its memory): `memory_uids` by default.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Protocol

NO_HASHES: tuple[int, ...] = ()


class UidMemory(Protocol):
    """The uid hashes of one partition's account-hours (segments).

    An account-hour holds uids once one was added, and until its last one is forgotten
    or it is dropped: `count` is then positive, and its slot among `slots()`."""

    def check(self, account: str, slot: int, uid: int) -> int:
        """-1 if the account-hour remembers `uid`, else how many uids it holds."""
        ...

    def add(self, account: str, slot: int, uid: int) -> None:
        """Remember one uid `check` found new."""
        ...

    def merge(self, account: str, slot: int, uids: Iterable[int]) -> None:
        """Remember these uids too (known ones are ignored)."""
        ...

    def forget(self, account: str, slot: int, uids: Iterable[int]) -> None:
        """Take these uids back (unknown ones are ignored)."""
        ...

    def drop(self, account: str, slot: int) -> None:
        """Forget every uid of the account-hour."""
        ...

    def count(self, account: str, slot: int) -> int: ...

    def hashes(self, account: str, slot: int) -> Collection[int]:
        """The account-hour's uids (empty if none), in no particular order."""
        ...

    def slots(self) -> Collection[int]:
        """The hour slots some account-hour of which holds uids."""
        ...

    def accounts(self, slot: int) -> list[str]:
        """The accounts whose hour `slot` holds uids."""
        ...

    def clear(self) -> None:
        """Forget everything (the partition was revoked)."""
        ...


UidFactory = Callable[[int], UidMemory]  # partition -> its uid memory


class MemoryUids:
    """`UidMemory` in Python dicts: slot -> account -> hashes (dicts with None values,
    which the garbage collector stops tracking; see `streams.usage.engine.state`)."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[int, dict[str, dict[int, None]]] = {}

    def check(self, account: str, slot: int, uid: int) -> int:
        accounts = self._slots.get(slot)
        hashes = None if accounts is None else accounts.get(account)
        if hashes is None:
            return 0
        return -1 if uid in hashes else len(hashes)

    def add(self, account: str, slot: int, uid: int) -> None:
        self._hashes(account, slot)[uid] = None

    def merge(self, account: str, slot: int, uids: Iterable[int]) -> None:
        added = dict.fromkeys(uids)
        if added:
            self._hashes(account, slot).update(added)

    def _hashes(self, account: str, slot: int) -> dict[int, None]:
        accounts = self._slots.get(slot)
        if accounts is None:
            accounts = self._slots[slot] = {}
        hashes = accounts.get(account)
        if hashes is None:
            hashes = accounts[account] = {}
        return hashes

    def forget(self, account: str, slot: int, uids: Iterable[int]) -> None:
        accounts = self._slots.get(slot)
        hashes = None if accounts is None else accounts.get(account)
        if hashes is None:
            return
        for uid in uids:
            hashes.pop(uid, None)
        if not hashes:
            self.drop(account, slot)

    def drop(self, account: str, slot: int) -> None:
        accounts = self._slots.get(slot)
        if accounts is not None:
            accounts.pop(account, None)
            if not accounts:
                del self._slots[slot]

    def count(self, account: str, slot: int) -> int:
        return len(self.hashes(account, slot))

    def hashes(self, account: str, slot: int) -> Collection[int]:
        accounts = self._slots.get(slot)
        hashes = None if accounts is None else accounts.get(account)
        return NO_HASHES if hashes is None else hashes.keys()

    def slots(self) -> Collection[int]:
        return self._slots.keys()

    def accounts(self, slot: int) -> list[str]:
        return list(self._slots.get(slot, ()))

    def clear(self) -> None:
        self._slots = {}


def memory_uids(partition: int) -> UidMemory:
    """The default `UidFactory`: every partition's uids in Python dicts."""
    return MemoryUids()
