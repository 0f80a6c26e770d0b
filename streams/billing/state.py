"""Bills as a worker holds them, and what each bill command does to them.

Two account-partitioned tables (`streams.tables`): `bills` (the latest version of each
bill, `<account>|<bill id>`) and `billindex` (an account's bill summaries, which also
say which periods are locked). Bill runs read usage, accounts and the catalog through
the worker's views (`streams.context`); the versions they make are pure functions
(`streams.billing.runs`, `streams.billing.bills`).
"""

from __future__ import annotations

import gc
import logging
import resource
import time
from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from streams.billing.bills import LifecycleError, transition
from streams.billing.counters import CountChange
from streams.billing.runs import (
    EncodedBill,
    LockedRange,
    encoded,
    finalize,
    locked_ranges,
    locked_reason,
    run_account_plan,
    updated_index,
)
from streams.clock import epoch_ms, from_ms
from streams.context import WorkerContext
from streams.partitioning import partition_for
from streams.schemas.balances import BalanceGrant
from streams.schemas.bill import Bill, BillStatus
from streams.schemas.commands import ChangeStatus, RunBills, Tick
from streams.tables import AccountTable, account_key, table_key

log = logging.getLogger(__name__)
MAX_CREDIT_PASSES = 4


@contextmanager
def cycle_collection_paused() -> Iterator[None]:
    """Python's cycle collector off for a block of plain computation (a run of thousands
    of accounts): what it allocates (models, Decimals, tuples) holds no cycles and is
    freed as it goes, but the allocations alone would start full collections of the
    worker's whole heap, which cost more than the run itself. Synchronous code only."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# The calling thread's own CPU time and page faults (Linux); elsewhere the process's.
_THREAD = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


@dataclass(frozen=True)
class ThreadUsage:
    """CPU seconds of the calling thread, in user mode and in the kernel, and its minor
    page faults (memory touched for the first time): a step whose wall time grows while
    its user time does not waited for the CPU or the kernel."""

    user: float
    system: float
    faults: int

    @classmethod
    def now(cls) -> ThreadUsage:
        usage = resource.getrusage(_THREAD)
        return cls(usage.ru_utime, usage.ru_stime, usage.ru_minflt)

    def since(self, before: ThreadUsage) -> ThreadUsage:
        return ThreadUsage(
            self.user - before.user, self.system - before.system, self.faults - before.faults
        )

    def count(self, stats: Counter[str], prefix: str) -> None:
        """Add these to the worker's stats (`/healthz`) as `<prefix>_user_ms`,
        `<prefix>_system_ms` and `<prefix>_page_faults`."""
        stats[f"{prefix}_user_ms"] += round(self.user * 1000)
        stats[f"{prefix}_system_ms"] += round(self.system * 1000)
        stats[f"{prefix}_page_faults"] += self.faults


@dataclass
class TickTimes:
    """Where a tick's time went, in seconds of the worker's event loop, per step: reading
    each account's stored bills, pricing (usage, plans, credits, `build_bill`), writing
    the new versions' JSON, and approving or locking ended bills; and what the loop's
    thread spent of the CPU and the kernel in the whole tick."""

    accounts: int = 0
    reading: float = 0.0
    pricing: float = 0.0
    json: float = 0.0
    finalizing: float = 0.0
    thread: ThreadUsage = ThreadUsage(0.0, 0.0, 0)

    def describe(self) -> str:
        return (
            f"{self.accounts:,} accounts priced in {self.pricing:.2f} s, their JSON "
            f"{self.json:.2f} s, stored bills read in {self.reading:.2f} s and finalized in "
            f"{self.finalizing:.2f} s (the loop's thread: {self.thread.user:.2f} s user, "
            f"{self.thread.system:.2f} s kernel, {self.thread.faults:,} page faults)"
        )

    def count(self, stats: Counter[str]) -> None:
        """Add these to the worker's stats (`/healthz`), the times in milliseconds."""
        stats["bill_tick_accounts"] += self.accounts
        stats["bill_tick_reading_ms"] += round(self.reading * 1000)
        stats["bill_tick_pricing_ms"] += round(self.pricing * 1000)
        stats["bill_tick_json_ms"] += round(self.json * 1000)
        stats["bill_tick_finalizing_ms"] += round(self.finalizing * 1000)
        self.thread.count(stats, "bill_tick")


class StoredBills(MutableMapping[str, Bill]):
    """An account's stored bills by id, in its bill index's order, each decoded from the
    bills table the first time it is read. A bill run reads the bills of the periods it
    bills (and, with credits, the others), not every bill of the account's history:
    decoding a bill costs a third of pricing the account's period, and an account adds
    a bill every period. Bills set here (a run's new versions) are kept as they are."""

    def __init__(
        self,
        account: str,
        table: Mapping[bytes, bytes],
        entries: dict[str, dict[str, Any]],
        bills: dict[str, Bill] | None = None,
    ) -> None:
        self.account = account
        self._table = table
        self._entries = entries  # id -> bill index entry, of bills the table holds
        self._bills: dict[str, Bill] = {} if bills is None else bills
        self._added = [bill_id for bill_id in self._bills if bill_id not in entries]

    @classmethod
    def read(cls, account: str, table: Mapping[bytes, bytes], index: bytes | None) -> StoredBills:
        entries = {
            entry["id"]: entry
            for entry in (orjson.loads(index) if index else [])
            if table_key(account, entry["id"]).encode() in table
        }
        return cls(account, table, entries)

    def __getitem__(self, bill_id: str) -> Bill:
        bill = self._bills.get(bill_id)
        if bill is not None:
            return bill
        if bill_id not in self._entries:
            raise KeyError(bill_id)
        raw = self._table[table_key(self.account, bill_id).encode()]
        bill = self._bills[bill_id] = Bill.model_validate_json(raw)
        return bill

    def __setitem__(self, bill_id: str, bill: Bill) -> None:
        if bill_id not in self._entries and bill_id not in self._bills:
            self._added.append(bill_id)
        self._bills[bill_id] = bill

    def __delitem__(self, bill_id: str) -> None:
        if bill_id not in self:
            raise KeyError(bill_id)
        self._entries.pop(bill_id, None)
        self._bills.pop(bill_id, None)
        if bill_id in self._added:
            self._added.remove(bill_id)

    def __contains__(self, bill_id: object) -> bool:
        return bill_id in self._entries or bill_id in self._bills

    def __iter__(self) -> Iterator[str]:
        yield from self._entries
        yield from self._added

    def __len__(self) -> int:
        return len(self._entries) + len(self._added)

    def copy(self) -> StoredBills:
        """Another view of the same stored bills, whose sets stay its own."""
        return StoredBills(self.account, self._table, dict(self._entries), dict(self._bills))

    def may_finalize(
        self, bill_id: str, now: datetime, grace: timedelta, approve: bool, lock: bool
    ) -> bool:
        """Whether `finalize` might change the stored bill, from its index entry alone:
        its period ended more than `grace` ago, and it is PENDING with auto-approval on,
        or APPROVED with auto-lock on."""
        if bill_id in self._bills:
            return True
        entry = self._entries[bill_id]
        if entry["end"] + grace // timedelta(milliseconds=1) > epoch_ms(now):
            return False
        status = entry["status"]
        return (status == BillStatus.PENDING and approve) or (
            status == BillStatus.APPROVED and lock
        )


class Billing:
    """Bill state of the accounts this worker owns, and what each command does to it."""

    def __init__(self, context: WorkerContext, bills: AccountTable, index: AccountTable) -> None:
        self.context = context
        self.bills = bills
        self.index = index
        self._locks: dict[str, tuple[bytes, list[LockedRange]]] = {}
        self.last_tick = TickTimes()  # where the last tick's time went

    # reads ------------------------------------------------------------------------

    def bills_of(self, account: str) -> StoredBills:
        """The account's stored bills, each decoded when it is first read."""
        return StoredBills.read(account, self.bills, self.index.get(account_key(account)))

    def locked(self, account: str, ts_ms: int) -> str | None:
        """Why a measurement of `account` at `ts_ms` may not be folded (its bill is locked)."""
        stored = self.index.get(account_key(account))
        if stored is None:
            return None
        cached = self._locks.get(account)
        if cached is None or cached[0] is not stored:
            cached = self._locks[account] = (stored, locked_ranges(stored))
        return locked_reason(cached[1], ts_ms)

    def locked_periods(self, account: str) -> list[tuple[int, int, str]]:
        stored = self.index.get(account_key(account))
        if stored is None:
            return []
        return [
            (period.start, period.end, locked_reason([period], period.start) or "")
            for period in locked_ranges(stored)
        ]

    def usage(
        self, account: str, functions: Mapping[str, Any], start: int, end: int
    ) -> Mapping[str, Decimal | None]:
        if self.context.usage is None:
            raise RuntimeError("the usage agent must be registered before bills run")
        return self.context.usage.period_values(account, functions, start, end)

    def segment_usage(
        self, account: str, functions: Mapping[str, Any], start: int, end: int
    ) -> Mapping[tuple[str, str], Decimal | None]:
        if self.context.usage is None:
            raise RuntimeError("the usage agent must be registered before bills run")
        return self.context.usage.period_segment_values(account, functions, start, end)

    def counts(self, account: str, counter: str) -> Sequence[CountChange]:
        counters = self.context.counters
        return () if counters is None else counters.history(account, counter)

    # commands ---------------------------------------------------------------------

    def run(self, account: str, now: datetime) -> list[Bill]:
        return self._run(account, self.bills_of(account), now)

    def _run(self, account: str, previous: Mapping[str, Bill], now: datetime) -> list[Bill]:
        accounts = self.context.accounts
        catalog = self.context.catalog
        if accounts is None or catalog is None:
            return []
        live = catalog.current()
        owner = accounts.account(account)
        plans = accounts.plans(account)
        # Credits are consumed across the account's bills in order: with several account
        # plans, a bill of one may change what is left for an earlier-run bill of another,
        # so the plans run again (on the fresh versions) until nothing changes.
        ledger = previous.copy() if isinstance(previous, StoredBills) else dict(previous)
        out: dict[str, Bill] = {}
        for _ in range(MAX_CREDIT_PASSES if len(plans) > 1 else 1):
            changed = False
            for account_plan in plans:
                result = run_account_plan(
                    account_plan=account_plan,
                    account=owner,
                    catalog=live,
                    previous=previous,
                    usage=self.usage,
                    now=now,
                    counts=self.counts,
                    grants=self.grants,
                    ledger=ledger,
                    segments=self.segment_usage,
                )
                for bill in result.bills:
                    changed |= out.get(bill.id) != bill
                    out[bill.id] = bill
                for reason in result.skipped:
                    log.debug("bill run %s: %s", account, reason)
            if not changed:
                break
        return list(out.values())

    def grants(self, account: str) -> Sequence[BalanceGrant]:
        balances = self.context.balances
        return () if balances is None else balances.grants(account)

    def tick(self, partition: int, now: datetime) -> list[EncodedBill]:
        """Run every account of `partition` and finalize its ended periods. Each account's
        new versions are encoded at once: a partition of many accounts holds their JSON,
        not thousands of Bill models, until the agent publishes them."""
        settings = self.context.settings
        accounts = self.context.accounts
        if accounts is None:
            return []
        out: list[EncodedBill] = []
        grace = timedelta(seconds=settings.bill_grace_period_s)
        approve, lock = settings.bill_auto_approve, settings.bill_auto_lock
        times = self.last_tick = TickTimes()
        clock = time.perf_counter
        usage = ThreadUsage.now()
        for account in accounts.account_codes():
            if partition_for(account, settings.partitions) != partition:
                continue
            started = clock()
            previous = self.bills_of(account)
            read = clock()
            fresh = {bill.id: bill for bill in self._run(account, previous, now)}
            priced = clock()
            out.extend(map(encoded, fresh.values()))
            written = clock()
            for bill_id in {**dict.fromkeys(previous), **fresh}:
                bill = fresh.get(bill_id)
                if bill is None:
                    if not previous.may_finalize(bill_id, now, grace, approve, lock):
                        continue  # not decoded: nothing to approve or lock
                    bill = previous[bill_id]
                out.extend(map(encoded, finalize(bill, now, grace, approve, lock)))
            times.accounts += 1
            times.reading += read - started
            times.pricing += priced - read
            times.json += written - priced
            times.finalizing += clock() - written
        times.thread = ThreadUsage.now().since(usage)
        times.count(self.context.stats)
        return out

    def change_status(self, command: ChangeStatus, now: datetime) -> list[Bill]:
        bill = self.bills_of(command.account).get(command.billId)
        if bill is None:
            raise LifecycleError(command.billId, f"no bill {command.billId} for {command.account}")
        changed = transition(bill, command.status, now, expected_version=command.expectedVersion)
        return [] if changed is bill else [changed]

    def handle(self, command: RunBills | Tick | ChangeStatus, now: datetime) -> list[EncodedBill]:
        """The bill versions a command makes, encoded (LifecycleError when it is refused)."""
        if isinstance(command, RunBills):
            at = from_ms(command.at) if command.at else now
            return [encoded(bill) for bill in self.run(command.account, at)]
        if isinstance(command, Tick):
            with cycle_collection_paused():
                return self.tick(command.partition, now)
        return [encoded(bill) for bill in self.change_status(command, now)]

    def store(self, bills: Sequence[EncodedBill]) -> float:
        """Write new bill versions to both tables: an account's bills and its index at
        once (of several versions of one bill, the last). Returns the seconds it took
        (added to the worker's `bill_store_ms` too, and the loop's thread's CPU time and
        page faults to `bill_store_user_ms`, `_system_ms`, `_page_faults`)."""
        started, usage = time.perf_counter(), ThreadUsage.now()
        by_account: dict[str, list[EncodedBill]] = {}
        for bill in bills:
            by_account.setdefault(bill.account, []).append(bill)
        with cycle_collection_paused():  # a tick's store allocates as much as its run
            for account, changed in by_account.items():
                self.bills.write(
                    account, {table_key(account, bill.id).encode(): bill.json for bill in changed}
                )
                key = account_key(account)
                self.index.write(account, {key: updated_index(self.index.get(key), changed)})
        spent, thread = time.perf_counter() - started, ThreadUsage.now().since(usage)
        stats = self.context.stats
        stats["bill_store_ms"] += round(spent * 1000)
        thread.count(stats, "bill_store")
        return spent

    async def confirm(self) -> None:
        """Wait until Kafka holds every write to both tables (`AccountTable.confirm`)."""
        await self.bills.confirm()
        await self.index.confirm()
