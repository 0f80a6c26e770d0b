"""Usage agent: `measurements` → per-account-hour usage records (`streams.usage`).

A thin loop: take a batch of messages, let the usage book judge and fold them (each
touched record written once), dead-letter every rejection to `measurements.rejected`,
wait until Kafka acknowledged both, then let `take_events` ack the batch. A timer
applies retention; two pages serve usage to the HTTP edge.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from faust.web import Request, Response, View

from streams import pages
from streams.agents.routing import on_owner
from streams.clock import DAY_MS, HOUR_MS, now_ms
from streams.context import MeterlineApp, WorkerContext
from streams.delivery import deliver
from streams.readiness import when_ready
from streams.sources import source_of
from streams.tables import account_table
from streams.topics import MEASUREMENTS, MEASUREMENTS_REJECTED, faust_topic
from streams.usage.book import UsageBook
from streams.usage.metering import Message
from streams.usage.validate import Horizon

log = logging.getLogger(__name__)


def _account(ask: pages.UsageRequest) -> str:
    return ask.account


def register(app: MeterlineApp, context: WorkerContext) -> None:
    settings = context.settings
    table = account_table(
        app, "usage", settings.partitions, "usage and uids per account and hour of ts"
    )
    book = UsageBook(
        table,
        context,
        Horizon(
            past_ms=settings.dedup_horizon_days * DAY_MS,
            future_ms=settings.max_future_skew_s * 1000,
        ),
    )
    context.usage = book  # bill runs read period values through it
    source = faust_topic(app, context.topics, MEASUREMENTS)
    rejected = faust_topic(app, context.topics, MEASUREMENTS_REJECTED)

    @app.agent(source, name="usage", concurrency=1)
    async def fold_measurements(stream: Any) -> None:
        batches = stream.take_events(
            settings.usage_batch_messages, within=settings.usage_batch_within_s
        )
        async for events in batches:
            messages = [
                Message(event.message.key, event.message.value, source_of(event.message))
                for event in events
            ]
            # 1. records written  2. rejections sent  3. both acknowledged by Kafka
            # (awaited here: faust's commit would not wait)  4. faust acks the batch
            outcome = book.fold(messages, now_ms())
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
            await book.confirm()
            context.stats["measurements_accepted"] += outcome.accepted
            context.stats["measurements_duplicate"] += outcome.duplicates
            context.stats["measurements_rejected"] += len(outcome.rejected)

    @app.timer(interval=settings.usage_sweep_interval_s)
    async def retention() -> None:
        """Drop uids past the dedup horizon and records past retention (by event time)."""
        trimmed = book.trim(settings.dedup_horizon_days + 1, settings.usage_retention_days)
        await book.confirm()
        if trimmed:
            log.info("usage retention: %d records trimmed or deleted", trimmed)

    @app.page(pages.USAGE)
    class AccountUsage(View):
        """Mergeable usage states of one account, served by the worker that owns it."""

        @when_ready(app)
        async def get(self, request: Request) -> Response:
            parse = pages.UsageRequest.parse
            return await on_owner(app, table, self, request, parse, self.answer, _account)

        async def answer(self, ask: pages.UsageRequest) -> Response:
            assert context.catalog is not None
            document = book.page(context.catalog.current().aggregations, ask)
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
            owned = {
                tp.partition
                for tp in app.assignor.assigned_actives()
                if tp.topic == source.get_topic_name()
            }
            first, last = ask.start // HOUR_MS, (ask.end - 1) // HOUR_MS
            accounts = book.accounts_between(first, last, owned, settings.partitions)
            return self.json({"accounts": accounts})

    del fold_measurements, retention, AccountUsage, UsageAccounts
