"""Billing agent: `bill.commands` → versioned bills on `bills` (`streams.billing`).

Runs come from the API (run), from a timer (one tick per partition, published by the
leader) and status changes (approve, lock). For every command:
  1. compute the new bill versions from the tables (pure, `streams.billing.runs`)
  2. publish them to `bills` and wait for Kafka's acknowledgement
  3. write them to the tables (bills, per-account index) and wait for Kafka again
  4. ack the command, so faust may commit its offset
so a crash between 2 and 3 re-publishes the same version (downstream de-duplicates by
id + version) instead of losing one. Steps 2 to 4 run beside the next commands: while
Kafka takes the bills of one partition's tick, the agent computes the next partition's
(commands about accounts of one partition still go one after the other). A command
that is not valid, is refused by the bill lifecycle or fails goes to
`bill.commands.rejected` with the reason (and is acknowledged by Kafka) before it is
acked.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

import orjson
from faust.types import EventT
from faust.web import Request, Response, View
from pydantic import ValidationError

from streams import pages
from streams.agents.routing import on_owner
from streams.billing.bills import LifecycleError
from streams.billing.preview import NoPreview, preview
from streams.billing.runs import EncodedBill
from streams.billing.state import Billing, TickTimes
from streams.bulk_producer import FLUSH_TIMEOUT_S, Batch
from streams.clock import from_ms, now_ms
from streams.context import MeterlineApp, WorkerContext
from streams.delivery import deliver
from streams.partitioning import partition_for
from streams.readiness import when_ready
from streams.schemas.bill import bill_json
from streams.schemas.commands import COMMANDS, ChangeStatus, RunBills, Tick
from streams.schemas.errors import error_text
from streams.sources import Source, source_of
from streams.tables import account_table, table_producer
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
    producer = table_producer(settings.kafka, app.watchdog)
    billing.bills.use_producer(producer)
    billing.index.use_producer(producer)

    @app.task
    async def connect() -> None:  # once the tables are recovered: the first tick is ready
        producer.start()

    context.locks = billing  # the usage agent refuses usage of locked periods
    context.previews = partial(preview, billing)  # the alerts agent measures them
    context.bills = billing.bills_of  # the balances page reads what bills consumed
    billing.index.watch(context.stale_facts.add)
    commands = faust_topic(app, context.topics, BILL_COMMANDS)
    bills_topic = faust_topic(app, context.topics, BILLS)
    rejected = faust_topic(app, context.topics, BILL_COMMANDS_REJECTED)

    # While Kafka takes one command's bills, the agent goes on with the next command, as
    # long as it is about other accounts: commands of one partition of accounts go one
    # after the other (a status change sees the bills of the tick before it), each
    # partition has at most one publication in flight, and a command's event is acked
    # (its offset may be committed) only once its bills are stored.
    publications: dict[int, asyncio.Task[None]] = {}

    def scope(command: RunBills | Tick | ChangeStatus) -> int:
        """The partition whose accounts a command reads and writes."""
        if isinstance(command, Tick):
            return command.partition
        return partition_for(command.account, partitions)

    async def published(partition: int) -> None:
        """Return once the publication in flight for `partition`, if any, is stored (its
        failure is the agent's)."""
        task = publications.pop(partition, None)
        if task is not None:
            await task

    def failed(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("bills were not stored: %r", task.exception())

    async def publish(
        bills: list[EncodedBill],
        sent: Batch,
        source: str,
        stream: Any,
        event: EventT[Any],
        times: TickTimes | None,
    ) -> None:
        # 1. Kafka holds the bills  2. then the tables, and wait for Kafka again (see the
        # module docstring)  3. then the command is acked
        await producer.settle(sent)
        stored = billing.store(bills)
        await billing.confirm()
        await stream.ack(event)
        # A tick of a partition makes thousands of versions: one line for them, with where
        # the tick's time went, each bill at DEBUG; a command of a few bills logs each at
        # INFO.
        each = logging.INFO if len(bills) <= LOGGED_BILLS else logging.DEBUG
        if each == logging.DEBUG:
            spent = f": {times.describe()}, tables written in {stored:.2f} s" if times else ""
            log.info("%d bill versions published and stored (%s)%s", len(bills), source, spent)
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

    async def reject(error: Exception, stream: Any, event: EventT[Any]) -> None:
        message = event.message
        source = source_of(message)
        reason = rejection_reason(error, source)
        log.warning("bill command %s rejected: %s", source, reason)
        context.stats["bill_commands_rejected"] += 1
        record = rejection(reason, source, message.value)
        await deliver(rejected, [(message.key, record, None)])
        await stream.ack(event)

    async def flush(*_: Any, **__: Any) -> None:  # the worker stops
        if publications:
            await asyncio.wait(list(publications.values()), timeout=FLUSH_TIMEOUT_S)
        await producer.close()

    app.on_before_shutdown.connect(flush)

    @app.agent(commands, name="billing", concurrency=1)
    async def handle(stream: Any) -> None:
        events = stream.noack()  # acked by `publish` or `reject`
        async for event in events.events():
            try:
                command = COMMANDS.validate_json(event.message.value or b"")
            except ValidationError as exc:
                await reject(exc, events, event)
                continue
            partition = scope(command)
            await published(partition)
            try:
                bills = billing.handle(command, from_ms(now_ms()))
            except Exception as exc:  # the command is not lost: it is dead-lettered
                await reject(exc, events, event)
                continue
            if not bills:
                await events.ack(event)
                continue
            records = [(bill.account.encode(), bill.json, None) for bill in bills]
            sent = producer.send(bills_topic.get_topic_name(), records)
            source = str(source_of(event.message))
            times = billing.last_tick if isinstance(command, Tick) else None
            task = asyncio.create_task(publish(bills, sent, source, events, event, times))
            task.add_done_callback(failed)
            publications[partition] = task
            await asyncio.sleep(0)  # the publications in flight move on

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
            body = b"[" + b",".join(map(bill_json, bills)) + b"]"
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
            body = b",".join(map(bill_json, bills))
            return self.bytes(b'{"data":[' + body + b"]}", content_type="application/json")

    del connect, handle, ticks, AccountBills, BillPreview
