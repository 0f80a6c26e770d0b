"""The usage a worker holds, and what the worker asks of it: the usage engine
(`streams.usage.engine`) and the facts it must be told.

- `process`: a batch of `measurements` messages judged, de-duplicated and folded; the
  caller makes the returned deltas durable before faust acks the batch;
- `period_values` (bill runs) and `page` (the worker's `/usage` page): read only the
  windows of the range asked for;
- `accounts_between`: accounts with usage in a range on the partitions given.

The engine is told facts instead of reading them: the live catalog, each account's
billing boundaries (its plans) and locked periods (its bills). An account whose plans
or bills changed is in `WorkerContext.stale_facts` (the tables report every change,
written here or read from a changelog); `process` tells the engine about those accounts
before the batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import orjson

from streams import pages
from streams.clock import DAY_MS, HOUR_MS
from streams.context import WorkerContext
from streams.memory import give_back
from streams.schemas.catalog import Aggregation, AggregationFunction, Catalog
from streams.usage.engine import LockedPeriod, Processed, Stats, UsageEngine
from streams.usage.metering import Message, Rejected
from streams.usage.state import UsageState, to_document

log = logging.getLogger(__name__)

T = TypeVar("T")

BUCKETS: dict[str, int] = {"HOUR": HOUR_MS, "DAY": DAY_MS}


class Queryable(Protocol):
    def query(
        self,
        account: str,
        aggregations: Iterable[str],
        start: int,
        end: int,
        bucket_ms: int | None = None,
    ) -> dict[tuple[str, int], UsageState]: ...

    def query_segments(
        self,
        account: str,
        aggregations: Iterable[str],
        start: int,
        end: int,
        bucket_ms: int | None = None,
    ) -> dict[tuple[str, str, int], UsageState]: ...


def usage_page(
    engine: Queryable, known: Mapping[str, Aggregation], ask: pages.UsageRequest
) -> dict[str, Any]:
    """The `/usage` page's answer: the functions of the known aggregations asked for, and
    the mergeable state of each (aggregation, bucket) with usage; with `segments`, of each
    (aggregation, segment, bucket), rows carrying the segment id ("" unsegmented)."""
    codes = ask.aggregations
    functions = {code: known[code].aggregation.value for code in codes if code in known}
    bucket = BUCKETS[ask.group_by] if ask.group_by else None
    if ask.segments:
        by_segment = engine.query_segments(ask.account, codes, ask.start, ask.end, bucket)
        rows = [
            {"aggregation": code, "segment": segment, "bucket": group, "state": to_document(state)}
            for (code, segment, group), state in sorted(by_segment.items())
        ]
    else:
        states = engine.query(ask.account, codes, ask.start, ask.end, bucket)
        rows = [
            {"aggregation": code, "bucket": group, "state": to_document(state)}
            for (code, group), state in sorted(states.items())
        ]
    return {"account": ask.account, "functions": functions, "rows": rows}


def _quoted(value: bytes | None) -> Any:
    """A message as a dead letter quotes it: its JSON, or its text."""
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace")


class UsageBook:
    """The worker's usage engine, kept told of the catalog, plans and locked bills."""

    def __init__(self, engine: UsageEngine, context: WorkerContext) -> None:
        self.engine = engine
        self.context = context
        self._catalog: Catalog | None = None
        self._thread: ThreadPoolExecutor | None = None

    def tell(self) -> None:
        """Tell the engine what changed since the last batch: the catalog, and the plans
        and locked bills of the accounts in `context.stale_facts`."""
        context = self.context
        assert context.catalog is not None
        catalog = context.catalog.current()
        if catalog is not self._catalog:
            self.engine.set_catalog(catalog)
            self._catalog = catalog
        stale = context.stale_facts
        if not stale:
            return
        accounts, locks = context.accounts, context.locks
        for account in list(stale):
            if accounts is not None:
                self.engine.set_boundaries(account, accounts.boundaries(account))
            if locks is not None:
                self.engine.set_locked(
                    account, [LockedPeriod(*period) for period in locks.locked_periods(account)]
                )
        stale.clear()

    async def process_off_loop(self, messages: Sequence[Message], now_ms: int) -> Processed:
        """`process`, on the book's own thread when the engine allows it (`parallel`): the
        event loop fetches, produces and answers meanwhile. Facts are told first, on the
        loop, where the tables are."""
        self.tell()
        return await self._off_loop(self._process_and_give_back, messages, now_ms)

    def _process_and_give_back(self, messages: Sequence[Message], now_ms: int) -> Processed:
        """`_process` on the book's thread, then what earlier batches freed in that
        thread's arena goes back to the OS (`streams.memory`)."""
        processed = self._process(messages, now_ms)
        give_back()
        return processed

    async def page_off_loop(
        self, known: Mapping[str, Aggregation], ask: pages.UsageRequest
    ) -> dict[str, Any]:
        """`page` on the book's thread (after the batch being folded, if any), so a usage
        query never holds up the event loop while a batch is folded."""
        return await self._off_loop(self.page, known, ask)

    async def _off_loop(self, call: Callable[..., T], *args: Any) -> T:
        if not self.engine.parallel:
            return call(*args)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="usage-engine")
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)

    def process(self, messages: Sequence[Message], now_ms: int) -> Processed:
        """The engine's outcome; if the engine itself fails (a bug, a panic outside a
        measurement's guard), every message of the batch is dead-lettered with the
        reason, so the batch is acknowledged as refused and the worker goes on."""
        self.tell()
        return self._process(messages, now_ms)

    def _process(self, messages: Sequence[Message], now_ms: int) -> Processed:
        try:
            return self.engine.process(messages, now_ms)
        except Exception as exc:
            first = messages[0].source if messages else "-"
            log.exception("usage engine failed on %d messages from %s", len(messages), first)
            reason = f"internal error of the usage engine, not counted: {exc!r}"
            rejected = [
                Rejected(None, "message", reason, _quoted(m.value), m.source) for m in messages
            ]
            return Processed(rejected=rejected, stats=Stats(rejected=len(rejected)))

    def period_values(
        self,
        account: str,
        functions: Mapping[str, AggregationFunction],
        start_ms: int,
        end_ms: int,
    ) -> Mapping[str, Decimal | None]:
        return self.engine.period_values(account, functions, start_ms, end_ms)

    def period_segment_values(
        self,
        account: str,
        functions: Mapping[str, AggregationFunction],
        start_ms: int,
        end_ms: int,
    ) -> Mapping[tuple[str, str], Decimal | None]:
        return self.engine.period_segment_values(account, functions, start_ms, end_ms)

    def page(self, known: Mapping[str, Aggregation], ask: pages.UsageRequest) -> dict[str, Any]:
        return usage_page(self.engine, known, ask)

    def accounts_between(self, owned: Iterable[int], start_ms: int, end_ms: int) -> list[str]:
        """Accounts with a window starting in [start, end) on the `owned` partitions."""
        return self.engine.accounts(owned, start_ms, end_ms)
