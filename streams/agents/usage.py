"""Usage agent: `measurements` → hourly usage per (account, aggregation), de-duplicated.

A thin loop: take a batch of messages, let `Metering` judge and fold them, write each
touched day record once, dead-letter every rejection to `measurements.rejected`.
`take_events` acks the batch only after this body ran, and faust flushes the changelog
before it commits the offsets: 1. records written  2. rejections sent  3. offsets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from faust.web import Request, Response, View

from streams import pages
from streams.agents.routing import on_owner
from streams.delivery import deliver
from streams.metering import Message, Metering, Source
from streams.partitioning import partition_for
from streams.readiness import when_ready
from streams.schemas.catalog import Aggregation
from streams.schemas.measurement import DAY_MS, HOUR_MS, Horizon
from streams.tables import account_table
from streams.topics import MEASUREMENTS, MEASUREMENTS_REJECTED, faust_topic
from streams.usage import to_document
from streams.usage_store import Reader, UsageRecord, expired, merged_states, parse_record_key

if TYPE_CHECKING:
    from streams.app import MeterlineApp, WorkerContext

log = logging.getLogger(__name__)
BUCKETS = {
    "HOUR": lambda window: window - window % HOUR_MS,
    "DAY": lambda window: window - window % DAY_MS,
}


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


def _account(ask: pages.UsageRequest) -> str:
    return ask.account


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def register(app: MeterlineApp, context: WorkerContext) -> None:
    settings = context.settings
    usage = account_table(
        app, "usage", settings.partitions, "hourly usage and uids per account and UTC day"
    )
    context.tables["usage"] = usage
    source = faust_topic(app, context.topics, MEASUREMENTS)
    rejected = faust_topic(app, context.topics, MEASUREMENTS_REJECTED)
    metering = Metering(
        Horizon(
            past_ms=settings.dedup_horizon_days * DAY_MS,
            future_ms=settings.max_future_skew_s * 1000,
        )
    )
    newest = {"ts": 0}

    def boundaries(account: str) -> list[int]:
        """Billing boundaries of the account's plans (epoch ms) that split usage windows."""
        if context.accounts is None:
            return []
        out: set[int] = set()
        for plan in context.accounts.plans(account):
            for moment in (
                plan.startDate,
                plan.endDate,
                plan.currentPeriodStart,
                plan.currentPeriodEnd,
            ):
                if moment is not None:
                    out.add(int(moment.timestamp() * 1000))
        return sorted(out)

    def read(key: str) -> bytes | None:
        stored: bytes | None = usage.get(key.encode())
        return stored

    @app.agent(source, name="usage", concurrency=1)
    async def meter(stream: Any) -> None:
        batches = stream.take_events(
            settings.usage_batch_messages, within=settings.usage_batch_within_s
        )
        async for events in batches:
            assert context.catalog is not None
            messages = [
                Message(
                    event.message.key,
                    event.message.value,
                    Source(event.message.topic, event.message.partition, event.message.offset),
                )
                for event in events
            ]
            outcome = metering.process(
                messages,
                context.catalog.current(),
                now_ms(),
                read,
                context.lock_check,
                boundaries,
            )
            # 1. records written  2. rejections sent  3. both acknowledged by Kafka
            # (awaited here: faust's commit would not wait)  4. faust acks the batch
            for key, value in outcome.writes.items():
                usage[key.encode()] = value
            for rejection in outcome.rejected:
                log.warning(
                    "rejected measurement %s#%s account=%s %s: %s",
                    rejection.source,
                    rejection.index,
                    rejection.account,
                    rejection.field,
                    rejection.reason,
                )
            await deliver(
                rejected,
                [((r.account or "").encode(), r.to_bytes(), None) for r in outcome.rejected],
            )
            await usage.confirm()
            newest["ts"] = max(newest["ts"], outcome.newest_ts)
            context.stats["measurements_accepted"] += outcome.accepted
            context.stats["measurements_duplicate"] += outcome.duplicates
            context.stats["measurements_rejected"] += len(outcome.rejected)

    @app.timer(interval=settings.usage_sweep_interval_s)
    async def sweep() -> None:
        """Drop uids past the dedup horizon and records past retention (by event time)."""
        if not newest["ts"]:
            return
        stale = list(
            expired(
                [key.decode() for key in usage],
                newest["ts"],
                settings.dedup_horizon_days + 1,
                settings.usage_retention_days,
            )
        )
        for text, delete in stale:
            key = text.encode()
            if delete:
                del usage[key]
                continue
            stored = usage.get(key)
            if stored is None:
                continue
            record = UsageRecord.from_bytes(stored)
            if record.uids:
                record.uids.clear()
                usage[key] = record.to_bytes()
        await usage.confirm()
        if stale:
            log.info("usage retention: %d records trimmed or deleted", len(stale))

    @app.page(pages.USAGE)
    class AccountUsage(View):
        """Mergeable usage states of one account, served by the worker that owns it."""

        @when_ready(app)
        async def get(self, request: Request) -> Response:
            parse = pages.UsageRequest.parse
            return await on_owner(app, usage, self, request, parse, self.answer, _account)

        async def answer(self, ask: pages.UsageRequest) -> Response:
            assert context.catalog is not None
            document = usage_page(read, context.catalog.current().aggregations, ask)
            return self.bytes(orjson.dumps(document), content_type="application/json")

    @app.page(pages.USAGE_ACCOUNTS)
    class UsageAccounts(View):
        """Accounts with usage in [start, end) on the partitions this worker owns."""

        @when_ready(app)
        async def get(self, request: Request) -> Response:
            try:
                ask = pages.UsageAccountsRequest.parse(request.query.items())
            except pages.BadPageRequest as error:
                return self.json(error.document(), status=400)
            first, last = ask.start // HOUR_MS, (ask.end - 1) // HOUR_MS
            owned = {
                tp.partition
                for tp in app.assignor.assigned_actives()
                if tp.topic == source.get_topic_name()
            }
            accounts = set()
            for key in usage:
                account, hour = parse_record_key(key.decode())
                if first <= hour <= last and partition_for(account, settings.partitions) in owned:
                    accounts.add(account)
            return self.json({"accounts": sorted(accounts)})

    del meter, sweep, AccountUsage, UsageAccounts
