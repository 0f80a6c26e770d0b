"""Billing agent: `bill.commands` → versioned bills on `bills` (`streams.billing`).

Runs come from the API (run), from a timer (one tick per partition, published by the
leader) and status changes (approve, lock). For every command:
  1. compute the new bill versions from the tables (pure, `streams.billing.runs`)
  2. publish them to `bills` and wait for Kafka's acknowledgement
  3. write them to the tables (bills, per-account index) and wait for Kafka again
so a crash between 2 and 3 re-publishes the same version (downstream de-duplicates by
id + version) instead of losing one. A command that is not valid, is refused by the
bill lifecycle or fails goes to `bill.commands.rejected` with the reason (and is
acknowledged by Kafka) before faust commits its offset.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import orjson
from faust.web import Request, Response, View
from pydantic import ValidationError

from streams import pages
from streams.agents.routing import on_owner
from streams.billing.bills import LifecycleError
from streams.billing.preview import NoPreview, preview
from streams.billing.runs import EncodedBill
from streams.billing.state import Billing
from streams.bulk_producer import BulkProducer
from streams.clock import from_ms, now_ms
from streams.context import MeterlineApp, WorkerContext
from streams.delivery import deliver
from streams.readiness import when_ready
from streams.schemas.commands import COMMANDS, Tick
from streams.schemas.errors import error_text
from streams.sources import Source, source_of
from streams.tables import MAX_MESSAGE_BYTES, account_table
from streams.topics import BILL_COMMANDS, BILL_COMMANDS_REJECTED, BILLS, faust_topic

log = logging.getLogger(__name__)
LOGGED_BILLS = 10  # a command making more bill versions logs them at DEBUG


def rejection_reason(error: Exception, source: Source) -> str:
    """Why a command was not carried out: each invalid field, the lifecycle's refusal, or
    an internal error (logged with its traceback)."""
    if isinstance(error, ValidationError):
        return error_text(error, whole="command")
    if isinstance(error, LifecycleError):
        return str(error)
    log.exception("bill command %s failed", source)
    return f"internal error: {error!r}"


def rejection(reason: str, source: Source, raw: bytes | None) -> bytes:
    """A `bill.commands.rejected` record: the reason, where the command was, the command."""
    command: Any
    try:
        command = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        command = raw.decode("utf-8", "replace") if raw else None
    return orjson.dumps({"reason": reason, "source": str(source), "command": command})


def register(app: MeterlineApp, context: WorkerContext) -> None:
    settings = context.settings
    partitions = settings.partitions
    billing = Billing(
        context,
        account_table(app, "bills", partitions, "Bill by <account>|<bill id> (latest version)"),
        account_table(app, "billindex", partitions, "Bill summaries of an account"),
    )
    # Bills and both tables are written through librdkafka (`streams.bulk_producer`),
    # flushed when the worker stops.
    producer = BulkProducer(
        settings.kafka, app.watchdog, extra={"message.max.bytes": MAX_MESSAGE_BYTES + 1024 * 1024}
    )
    billing.bills.use_producer(producer)
    billing.index.use_producer(producer)

    @app.task
    async def connect() -> None:  # once the tables are recovered: the first tick is ready
        producer.start()

    async def flush(*_: Any, **__: Any) -> None:
        await producer.close()

    app.on_before_shutdown.connect(flush)
    context.locks = billing  # the usage agent refuses usage of locked periods
    context.previews = partial(preview, billing)  # the alerts agent measures them
    context.bills = billing.bills_of  # the balances page reads what bills consumed
    billing.index.watch(context.stale_facts.add)
    commands = faust_topic(app, context.topics, BILL_COMMANDS)
    bills_topic = faust_topic(app, context.topics, BILLS)
    rejected = faust_topic(app, context.topics, BILL_COMMANDS_REJECTED)

    async def publish(bills: list[EncodedBill], source: str) -> None:
        # 1. publish and wait for Kafka  2. then the tables, and wait for Kafka again
        # (see the module docstring)
        records = [(bill.account.encode(), bill.json, None) for bill in bills]
        await producer.deliver(bills_topic.get_topic_name(), records)
        billing.store(bills)
        await billing.confirm()
        # A tick of a partition makes thousands of versions: one line for them, each bill
        # at DEBUG; a command of a few bills logs each at INFO.
        each = logging.INFO if len(bills) <= LOGGED_BILLS else logging.DEBUG
        if each == logging.DEBUG:
            log.info("%d bill versions published and stored (%s)", len(bills), source)
        if log.isEnabledFor(each):
            for bill in bills:
                log.log(
                    each,
                    "bill %s v%d %s account=%s total=%s %s (%s)",
                    bill.id,
                    bill.version,
                    bill.status,
                    bill.account,
                    bill.total,
                    bill.currency,
                    source,
                )
        context.stats["bill_versions"] += len(bills)

    @app.agent(commands, name="billing", concurrency=1)
    async def handle(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            source = source_of(message)
            try:
                command = COMMANDS.validate_json(message.value or b"")
                bills = billing.handle(command, from_ms(now_ms()))
            except Exception as exc:  # faust would ack a swallowed command: dead-letter it
                reason = rejection_reason(exc, source)
                log.warning("bill command %s rejected: %s", source, reason)
                context.stats["bill_commands_rejected"] += 1
                record = rejection(reason, source, message.value)
                await deliver(rejected, [(message.key, record, None)])
                continue
            if bills:
                await publish(bills, str(source))

    @app.timer(interval=settings.bill_run_interval_s, on_leader=True)
    async def ticks() -> None:
        at = now_ms()
        for partition in range(partitions):
            tick = Tick(partition=partition, at=at)
            await commands.send(
                key=b"tick", value=tick.model_dump_json().encode(), partition=partition
            )

    @app.page(pages.BILLS)
    class AccountBills(View):
        """Every bill of one account (latest versions), from the worker that owns it."""

        @when_ready(app)
        async def get(self, request: Request) -> Response:
            return await on_owner(
                app, billing.index, self, request, pages.parse_account, self.answer
            )

        async def answer(self, account: str) -> Response:
            bills = sorted(billing.bills_of(account).values(), key=lambda b: b.startDate)
            body = b"[" + b",".join(bill.model_dump_json().encode() for bill in bills) + b"]"
            return self.bytes(body, content_type="application/json")

    @app.page(pages.BILL_PREVIEW)
    class BillPreview(View):
        """The bill an account would get for the period containing `at`: computed, never
        stored or published (`streams.billing.preview`)."""

        @when_ready(app)
        async def get(self, request: Request) -> Response:
            return await on_owner(
                app,
                billing.index,
                self,
                request,
                pages.PreviewRequest.parse,
                self.answer,
                lambda ask: ask.account,
            )

        async def answer(self, ask: pages.PreviewRequest) -> Response:
            try:
                bills = preview(billing, ask.account, from_ms(ask.at))
            except NoPreview as missing:
                return self.json(missing.document(), status=404)
            body = b",".join(bill.model_dump_json().encode() for bill in bills)
            return self.bytes(b'{"data":[' + body + b"]}", content_type="application/json")

    del connect, handle, ticks, AccountBills, BillPreview
