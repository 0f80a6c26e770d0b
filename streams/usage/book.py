"""The usage a worker holds: the `usage` table of per-account-hour records
(`streams.usage.store`), and what the worker asks of it.

- `fold`: a batch of `measurements` messages judged and folded (`Metering`), the
  records written; the caller then awaits `confirm()` before faust acks the batch;
- `period_values` (bill runs) and `page` (the worker's `/usage` page): read only the
  records of the range asked for;
- `accounts_between`: accounts with usage in a range on the partitions given;
- `trim`: retention by event time, measured from the newest `ts` folded, never from
  the wall clock: uids dropped past the dedup horizon, records deleted past retention.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from streams import pages
from streams.clock import day_start, hour_start
from streams.context import WorkerContext
from streams.partitioning import partition_for
from streams.schemas.catalog import Aggregation, AggregationFunction
from streams.tables import AccountTable
from streams.usage.metering import BatchOutcome, Message, Metering
from streams.usage.state import to_document
from streams.usage.store import (
    Reader,
    UsageRecord,
    expired,
    merged_states,
    parse_record_key,
    period_values,
)
from streams.usage.validate import Horizon

log = logging.getLogger(__name__)

BUCKETS: dict[str, Callable[[int], int]] = {"HOUR": hour_start, "DAY": day_start}


def usage_page(
    read: Reader, known: Mapping[str, Aggregation], ask: pages.UsageRequest
) -> dict[str, Any]:
    """The `/usage` page's answer: the functions of the known aggregations asked for, and
    the mergeable state of each (aggregation, bucket) with usage."""
    codes = ask.aggregations
    functions = {code: known[code].aggregation.value for code in codes if code in known}
    bucket = BUCKETS[ask.group_by] if ask.group_by else None
    states = merged_states(read, ask.account, codes, ask.start, ask.end, bucket)
    rows = [
        {"aggregation": code, "bucket": group, "state": to_document(state)}
        for (code, group), state in sorted(states.items())
    ]
    return {"account": ask.account, "functions": functions, "rows": rows}


class UsageBook:
    """The usage table of one worker, with the metering that folds into it."""

    def __init__(self, table: AccountTable, context: WorkerContext, horizon: Horizon) -> None:
        self.table = table
        self.context = context
        self.metering = Metering(horizon)
        self.newest_ts = 0

    def read(self, key: str) -> bytes | None:
        stored: bytes | None = self.table.get(key.encode())
        return stored

    def fold(self, messages: Iterable[Message], now_ms: int) -> BatchOutcome:
        """Judge and fold a batch; write every touched record (not yet confirmed)."""
        context = self.context
        assert context.catalog is not None
        outcome = self.metering.process(
            messages,
            context.catalog.current(),
            now_ms,
            self.read,
            context.locks.locked if context.locks else None,
            context.accounts.boundaries if context.accounts else None,
        )
        for key, value in outcome.writes.items():
            self.table[key.encode()] = value
        self.newest_ts = max(self.newest_ts, outcome.newest_ts)
        return outcome

    async def confirm(self) -> None:
        await self.table.confirm()

    def period_values(
        self,
        account: str,
        functions: Mapping[str, AggregationFunction],
        start_ms: int,
        end_ms: int,
    ) -> Mapping[str, Decimal | None]:
        return period_values(self.read, account, functions, start_ms, end_ms)

    def page(self, known: Mapping[str, Aggregation], ask: pages.UsageRequest) -> dict[str, Any]:
        return usage_page(self.read, known, ask)

    def accounts_between(
        self, first_hour: int, last_hour: int, owned: set[int], partitions: int
    ) -> list[str]:
        """Accounts with a record in hours [first, last] on the `owned` partitions."""
        accounts = set()
        for key in self.table:
            account, hour = parse_record_key(key.decode())
            if first_hour <= hour <= last_hour and partition_for(account, partitions) in owned:
                accounts.add(account)
        return sorted(accounts)

    def trim(self, dedup_days: int, retention_days: int) -> int:
        """Apply retention; the number of records trimmed or deleted."""
        if not self.newest_ts:
            return 0
        keys = [key.decode() for key in self.table]
        stale = list(expired(keys, self.newest_ts, dedup_days, retention_days))
        for text, delete in stale:
            key = text.encode()
            if delete:
                del self.table[key]
                continue
            stored = self.table.get(key)
            if stored is None:
                continue
            record = UsageRecord.from_bytes(stored)
            if record.uids:
                record.uids.clear()
                self.table[key] = record.to_bytes()
        return len(stale)
