"""Usage agent: `measurements` → the usage engine, made durable in the usage log.

A thin loop per batch (`noack_take`: faust acks nothing itself): the engine judges,
de-duplicates and folds the batch and returns one delta per partition it changed
(`streams.usage.engine`); the agent produces the deltas to the usage log
(`streams.usage.log`), the rejections to `measurements.rejected` and measurements read
on the wrong partition back to their account's partition, and acks the batch once
Kafka acknowledged all of it (`InFlight`: the next batches are processed meanwhile).
Two timers write snapshot rounds (so the log can be compacted and recovery stays short)
and apply retention. A lock keeps the log in the order recovery needs: nothing of a
batch is written while a round is, and the reverse. Two pages serve usage to the HTTP
edge.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import aiohttp
import orjson
from faust.types import TP, EventT
from faust.web import Request, Response, View
from yarl import URL

from streams import pages
from streams.agents.routing import on_owner
from streams.clock import DAY_MS, now_ms
from streams.commits import InOrderConsumer
from streams.context import MeterlineApp, WorkerContext
from streams.delivery import Record, deliver
from streams.readiness import when_ready
from streams.sources import Source, source_of
from streams.tables import account_table, table_producer
from streams.topics import MEASUREMENTS, MEASUREMENTS_REJECTED, faust_topic
from streams.usage.book import UsageBook
from streams.usage.engine import Delta, Limits, ReferenceEngine, UsageEngine
from streams.usage.engine.choose import make_engine
from streams.usage.engine.uids import UidFactory
from streams.usage.intake import BulkIntake, Taken
from streams.usage.log import UsageLogTable
from streams.usage.metering import Message
from streams.usage.validate import Horizon

log = logging.getLogger(__name__)


def _account(ask: pages.UsageRequest) -> str:
    return ask.account


def new_engine(context: WorkerContext) -> tuple[UsageEngine, str]:
    """The usage engine METERLINE_ENGINE asks for (`choose.make_engine`: native when it
    is built, else the Python reference), and its name. METERLINE_STORE=rocksdb keeps the
    uid memory in a local RocksDB, which only the Python engine has."""
    settings = context.settings
    horizon = Horizon(
        past_ms=settings.dedup_horizon_days * DAY_MS,
        future_ms=settings.max_future_skew_s * 1000,
    )
    if settings.store == "rocksdb":  # wiped here, rebuilt from the usage log by recovery
        # rocksdict is an extra (meterline[rocksdb]): imported only when it is used
        from streams.usage.engine.uids_rocksdb import RocksUidStore

        uids: UidFactory = RocksUidStore(
            settings.data_dir / "usage-uids",
            write_buffer_mb=settings.rocksdb_write_buffer_mb,
            block_cache_mb=settings.rocksdb_block_cache_mb,
        )
        engine = ReferenceEngine(
            settings.partitions,
            horizon=horizon,
            retention_days=settings.usage_retention_days,
            limits=Limits(),
            uids=uids,
        )
        return engine, "python (uid memory in RocksDB)"
    return make_engine(
        settings.engine,
        settings.partitions,
        None,
        horizon,
        settings.usage_retention_days,
        Limits(),
        settings.engine_threads,
    )


def _records(deltas: list[Delta]) -> list[Record]:
    return [(delta.key, delta.value, delta.partition) for delta in deltas]


PEER_TIMEOUT = aiohttp.ClientTimeout(total=10)


class PeerUnavailable(Exception):
    """Another worker of the group did not give its part of an answer."""


def _ident(url: str) -> tuple[str, int]:
    parsed = URL(url)
    return (parsed.host or "", parsed.port or 0)


async def _ack(stream: Any, events: Sequence[EventT[Any]]) -> None:
    for event in events:
        await stream.ack(event)


def tell_usage_seen(context: WorkerContext, messages: Sequence[Message]) -> None:
    """Tell the hooks (alerts) which measurements were folded; a hook that fails is
    logged and costs nothing else."""
    for seen in context.usage_seen:
        try:
            seen(messages)
        except Exception:
            log.exception("a usage hook failed on %d measurements (usage is kept)", len(messages))


def intake_messages(
    taken: Taken, writable: set[int] | None, blocked: set[TP], context: WorkerContext
) -> list[Message]:
    """The messages of a bulk batch this worker may fold. A partition that a rebalance in
    progress is taking away is left whole, for the rest of the epoch (its next owner
    reads it from the committed offset; a later batch of it must not be marked done
    past the messages left)."""
    messages: list[Message] = []
    for part in taken.parts:
        tp = part.tp
        if tp in blocked or (writable is not None and tp.partition not in writable):
            if tp not in blocked:
                blocked.add(tp)
                log.info(
                    "%s left to the partition's new owner",
                    Source(tp.topic, tp.partition, part.records[0].offset),
                )
            context.stats["measurements_left_to_new_owner"] += len(part.records)
            continue
        topic, partition = tp.topic, tp.partition
        messages.extend(
            Message(r.key, r.value, Source(topic, partition, r.offset)) for r in part.records
        )
    return messages


def stop_worker(exc: BaseException) -> None:
    """The usage agent failed between folding a batch and acknowledging it: the engine
    may hold usage whose delta is not in the usage log. Going on would let later batches
    be committed while that usage is lost at the next restart, so the process exits, and
    its restart rebuilds the engine from the log and reads the batch again from the
    committed offset (`streams.commits` never commits past it)."""
    log.critical("usage agent failed; the worker exits to restart from its usage log", exc_info=exc)
    logging.shutdown()
    os._exit(EXIT_USAGE_AGENT_FAILED)


EXIT_USAGE_AGENT_FAILED = 70  # EX_SOFTWARE


class InFlight:
    """Batches processed whose writes Kafka has not acknowledged yet, oldest first.

    The next batch is processed while the writes of the last ones travel; a batch is
    acked (its offsets may be committed) once its own writes and every earlier batch's
    are acknowledged, so offsets are committed in order and never ahead of the usage
    they stand for. At most `depth` batches are in flight: the agent waits for the
    oldest before it takes another.
    """

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.batches: deque[asyncio.Future[None]] = deque()

    async def add(self, writes: Awaitable[object], ack: Callable[[], Awaitable[None]]) -> None:
        previous = self.batches[-1] if self.batches else None
        self.batches.append(asyncio.ensure_future(self._settle(writes, previous, ack)))
        while self.batches and (len(self.batches) > self.depth or self.batches[0].done()):
            await self.batches.popleft()

    async def drain(self) -> None:
        """Return once every batch in flight is acknowledged and acked."""
        while self.batches:
            await self.batches.popleft()

    def cancel(self) -> None:
        """The agent stops: batches not acknowledged stay unacked (read again later)."""
        for batch in self.batches:
            batch.cancel()
        self.batches.clear()

    @staticmethod
    async def _settle(
        writes: Awaitable[object],
        previous: Awaitable[None] | None,
        ack: Callable[[], Awaitable[None]],
    ) -> None:
        await writes
        if previous is not None:
            await previous
        await ack()


def register(app: MeterlineApp, context: WorkerContext) -> None:
    settings = context.settings
    engine, context.usage_engine = new_engine(context)
    table = account_table(
        app,
        "usage",
        settings.partitions,
        "the usage log: deltas, snapshot segments and markers of the usage engine",
        kind=UsageLogTable,
    )
    assert isinstance(table, UsageLogTable)
    table.engine, table.stats = engine, context.stats  # before faust makes its storage
    log.info("usage engine: %s", context.usage_engine)
    book = UsageBook(engine, context)
    context.usage = book  # bill runs read period values through it
    source = faust_topic(app, context.topics, MEASUREMENTS)
    rejected = faust_topic(app, context.topics, MEASUREMENTS_REJECTED)
    # The usage log is written through librdkafka (`streams.bulk_producer`): its deltas
    # are the worker's largest writes (a batch of 100,000 measurements writes megabytes),
    # and aiokafka would build, checksum and compress them on the event loop, holding
    # the GIL the fold and the consumer need. Flushed when the worker stops.
    producer = table_producer(settings.kafka, app.watchdog)
    log_topic = table.changelog_topic_name

    async def flush(*_: Any, **__: Any) -> None:
        await producer.close()

    app.on_before_shutdown.connect(flush)
    # One writer of the usage log at a time: a snapshot round's segments must follow
    # every delta they hold and precede every delta they do not.
    writing = asyncio.Lock()

    def owned() -> set[int]:
        name = source.get_topic_name()
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name}

    in_flight = InFlight(settings.usage_batches_in_flight)

    def writable(events: Sequence[EventT[Any]]) -> Sequence[EventT[Any]]:
        """The events of partitions this worker may write the usage log of. The others
        (read just before a rebalance took their partition away) are neither processed
        nor acked: their partition's owner reads them again from the committed offset."""
        open_ = table.store.writable
        if open_ is None or all(event.message.partition in open_ for event in events):
            return events
        for event in events:
            if event.message.partition not in open_:
                context.stats["measurements_left_to_new_owner"] += 1
                log.info("%s left to the partition's new owner", source_of(event.message))
        return [event for event in events if event.message.partition in open_]

    async def fold(messages: list[Message]) -> asyncio.Future[Any]:
        """Fold a batch (the caller holds `writing`) and start its writes: deltas, dead
        letters and forwards on their way to Kafka. The batch may be acked once Kafka
        acknowledged them all (awaited by `InFlight`: faust's commit would not wait) and
        every batch before it was acked. A native engine folds on its own thread while
        the loop goes on fetching and producing; a revocation meanwhile waits for
        `writing` (`drain`), so the writes still go out while the partitions are ours."""
        processed = await book.process_off_loop(messages, now_ms())
        tell_usage_seen(context, messages)
        writes = asyncio.gather(
            producer.deliver(log_topic, _records(processed.deltas)),
            deliver(
                rejected,
                [((r.account or "").encode(), r.to_bytes(), None) for r in processed.rejected],
            ),
            deliver(source, [(f.key, f.value, f.partition) for f in processed.forwards]),
        )
        for rejection in processed.rejected:
            log.warning(
                "rejected measurement %s#%s account=%s %s: %s",
                rejection.source,
                rejection.index,
                rejection.account,
                rejection.field,
                rejection.reason,
            )
        stats = processed.stats
        context.stats["measurements_accepted"] += stats.accepted
        context.stats["measurements_duplicate"] += stats.duplicates
        context.stats["measurements_rejected"] += stats.rejected
        context.stats["measurements_forwarded"] += stats.forwarded
        return writes

    @app.agent(source, name="usage", concurrency=1)
    async def fold_measurements(stream: Any) -> None:
        """The stream intake (METERLINE_USAGE_INTAKE=stream): faust's events, in batches.
        With the bulk intake this agent gets nothing: its records go to `intake`."""
        batches = stream.noack_take(
            settings.usage_batch_messages, within=settings.usage_batch_within_s
        )
        try:
            async for batch in batches:
                events = writable(batch)
                messages = [
                    Message(event.message.key, event.message.value, source_of(event.message))
                    for event in events
                ]
                async with writing:
                    writes = await fold(messages)
                await in_flight.add(writes, partial(_ack, stream, events))
        except Exception as exc:
            stop_worker(exc)
        finally:
            in_flight.cancel()

    async def drain() -> None:
        """Before partitions go: the batch being folded has started its writes, and every
        batch in flight is acknowledged and acked."""
        async with writing:
            await in_flight.drain()

    intake = None
    if settings.usage_intake == "bulk":
        intake = app.usage_intake = BulkIntake(
            source.get_topic_name(),
            high=2 * settings.usage_batch_messages,
            low=settings.usage_batch_messages,
            drain=drain,
        )

    def done(taken: Taken) -> Callable[[], Awaitable[None]]:
        async def mark() -> None:
            ends = taken.ends()
            consumer = app.consumer
            if isinstance(consumer, InOrderConsumer):
                consumer.intake_done(ends)
                consumer.commit_soon()
            for tp, end in ends.items():
                app.watchdog.acked(tp.topic, tp.partition, end - 1)

        return mark

    @app.task
    async def take_measurements() -> None:
        """The bulk intake: whole fetches of `measurements`, folded in batches."""
        if intake is None:
            return
        blocked: set[TP] = set()  # partitions taken away during this epoch
        epoch = intake.epoch
        try:
            while True:
                taken = await intake.take(settings.usage_batch_messages)
                for tp, start in taken.starts().items():
                    app.watchdog.delivered(tp.topic, tp.partition, start)
                async with writing:
                    if not intake.current(taken):
                        continue  # a rebalance began since: read again from the commit
                    if taken.epoch != epoch:
                        epoch, blocked = taken.epoch, set()
                    messages = intake_messages(taken, table.store.writable, blocked, context)
                    writes = await fold(messages)
                await in_flight.add(writes, done(taken))
        except Exception as exc:
            stop_worker(exc)
        finally:
            in_flight.cancel()

    @app.timer(interval=settings.usage_snapshot_interval_s)
    async def snapshot() -> None:
        """Write the account-hours changed since the last round of each partition owned,
        then tombstone the deltas they hold (see `SnapshotRound` for the order)."""
        for partition in sorted(owned()):
            async with writing:
                await in_flight.drain()  # the round's segments follow every delta they hold
                round_ = engine.snapshot(partition)
                if not round_.records and not round_.obsolete:
                    continue
                await producer.deliver(
                    log_topic, [(r.key, r.value, partition) for r in round_.records]
                )
                await producer.deliver(
                    log_topic, [(round_.marker.key, round_.marker.value, partition)]
                )
                engine.confirm_snapshot(round_)
            try:
                await producer.deliver(
                    log_topic, [(key, None, partition) for key in round_.obsolete]
                )
            except Exception as exc:  # the engine forgot them: only a successor re-tombstones
                stop_worker(exc)
            context.stats["usage_snapshot_segments"] += len(round_.records)
            log.info(
                "usage snapshot of %s[%d] at seq %d: %d segments written, %d deltas tombstoned",
                log_topic,
                partition,
                round_.seq,
                len(round_.records),
                len(round_.obsolete),
            )

    @app.timer(interval=settings.usage_sweep_interval_s)
    async def retention() -> None:
        """Drop uids past the dedup horizon and windows past retention (by event time)."""
        async with writing:
            await in_flight.drain()
            deltas = engine.expire(owned())
            await producer.deliver(log_topic, _records(deltas))
        for delta in deltas:
            log.info("usage retention applied to %s[%d]", log_topic, delta.partition)

    @app.page(pages.USAGE)
    class AccountUsage(View):
        """Mergeable usage states of one account, served by the worker that owns it."""

        @when_ready(app)
        async def get(self, request: Request) -> Response:
            parse = pages.UsageRequest.parse
            return await on_owner(app, table, self, request, parse, self.answer, _account)

        async def answer(self, ask: pages.UsageRequest) -> Response:
            assert context.catalog is not None
            document = await book.page_off_loop(context.catalog.current().aggregations, ask)
            return self.bytes(orjson.dumps(document), content_type="application/json")

    @app.page(pages.USAGE_ACCOUNTS)
    class UsageAccounts(View):
        """Accounts with usage in [start, end) on every partition: this worker's own,
        and those of the other workers of the group, asked with `local` (a bill job or
        a usage query without accounts must see all of them, or fail: 503)."""

        @when_ready(app)
        async def get(self, request: Request) -> Response:
            try:
                ask = pages.UsageAccountsRequest.parse(request.query.items())
            except pages.BadPageRequest as error:
                return self.json(error.document(), status=400)
            accounts = set(book.accounts_between(owned(), ask.start, ask.end))
            if not ask.local:
                try:
                    for theirs in await asyncio.gather(*(peer_accounts(p, ask) for p in peers())):
                        accounts.update(theirs)
                except PeerUnavailable as error:
                    log.warning("usage listing incomplete: %s", error)
                    return self.json(
                        {"error": str(error)}, status=503, headers={"Retry-After": "1"}
                    )
            return self.json({"accounts": sorted(accounts)})

    def peers() -> list[str]:
        """Web URLs of the other workers that own partitions of the usage log."""
        me = _ident(str(app.conf.canonical_url))
        return sorted(
            str(url) for url in app.router.table_metadata(table.name) if _ident(str(url)) != me
        )

    async def peer_accounts(peer: str, ask: pages.UsageAccountsRequest) -> list[str]:
        local = pages.UsageAccountsRequest(ask.start, ask.end, local=True)
        url = peer.rstrip("/") + pages.USAGE_ACCOUNTS
        try:
            async with app.http_client.get(
                url, params=local.params(), timeout=PEER_TIMEOUT
            ) as answer:
                if answer.status != 200:
                    raise PeerUnavailable(f"worker {peer} answered {answer.status}")
                document = await answer.json()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise PeerUnavailable(f"worker {peer} did not answer: {exc!r}") from None
        return [str(account) for account in document["accounts"]]

    del fold_measurements, take_measurements, snapshot, retention, AccountUsage, UsageAccounts
