"""Usage agent: `measurements` → hourly usage per (account, aggregation), de-duplicated.

A thin loop: take a batch of messages, let `Metering` judge and fold them, write each
touched day record once, dead-letter every rejection to `measurements.rejected`.
`take_events` acks the batch only after this body ran, and faust flushes the changelog
before it commits the offsets: 1. records written  2. rejections sent  3. offsets.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from faust.web import Request, Response, View

from streams.delivery import deliver
from streams.metering import Message, Metering, Source
from streams.partitioning import partition_for
from streams.readiness import when_ready
from streams.schemas.measurement import DAY_MS, HOUR_MS, Horizon
from streams.tables import account_table
from streams.topics import MEASUREMENTS, MEASUREMENTS_REJECTED, faust_topic
from streams.usage import to_document
from streams.usage_store import UsageRecord, expired, merged_states, parse_record_key

if TYPE_CHECKING:
    from streams.app import MeterlineApp, WorkerContext

log = logging.getLogger(__name__)
BUCKETS = {
    "HOUR": lambda window: window - window % HOUR_MS,
    "DAY": lambda window: window - window % DAY_MS,
}


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

    @app.page("/usage/{account}")
    class AccountUsage(View):
        """Mergeable usage states of one account, served by the worker that owns it."""

        @when_ready(app)
        @app.table_route(table=usage, match_info="account")  # type: ignore[arg-type]
        async def get(self, request: Request, account: str) -> Response:
            query = request.query
            try:
                start = int(query["start"])
                end = int(query["end"])
                codes = [c for c in query.get("aggregations", "").split(",") if c]
                bucket = BUCKETS.get(query.get("groupBy", ""))
            except (KeyError, ValueError) as exc:
                return self.json({"error": f"bad query: {exc}"}, status=400)
            assert context.catalog is not None
            known = context.catalog.current().aggregations
            functions = {code: known[code].aggregation.value for code in codes if code in known}
            states = merged_states(read, account, codes, start, end, bucket)
            rows = [
                {"aggregation": code, "bucket": group, "state": to_document(state)}
                for (code, group), state in sorted(states.items())
            ]
            return self.bytes(
                orjson.dumps({"account": account, "functions": functions, "rows": rows}),
                content_type="application/json",
            )

    @app.page("/usage-accounts")
    class UsageAccounts(View):
        """Accounts with usage in [start, end) on the partitions this worker owns."""

        @when_ready(app)
        async def get(self, request: Request) -> Response:
            try:
                first = int(request.query["start"]) // HOUR_MS
                last = (int(request.query["end"]) - 1) // HOUR_MS
            except (KeyError, ValueError) as exc:
                return self.json({"error": f"bad query: {exc}"}, status=400)
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
