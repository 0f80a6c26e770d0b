"""Offsets faust may commit: never past a message that was handed to an agent and not acked.

faust-streaming (0.15) commits, per partition, the end of the first run of consecutive
acked offsets (`Consumer._new_offset`). Its guard against committing over a message
still being processed is loose: it holds the commit back only when the first acked
offset is more than one past the committed one, and not at all when nothing was
committed yet. So with offset C committed, C handed to an agent and lost there (an
agent that failed mid-batch: faust restarts it and it goes on with C + 1 …), and C + 1
acked, faust commits C + 2: C is never read again, and a measurement acknowledged to
its producer is never counted. The same when C's batch is still in flight and a later
batch of the partition is acked first.

`InOrderConsumer` keeps faust's bookkeeping and changes that one rule: the run that may
be committed must start at the position reading started from, which is the committed
offset, or the first offset delivered after the partition was assigned when that is
later (a compacted record or a transaction marker at the committed position, or
records deleted by retention). Gaps faust saw while fetching (offsets that do not
exist) count as acked, as before. A partition whose oldest message is not acked keeps
its committed offset until it is; the watchdog reports that as a commit that does not
advance while the partition has lag.

That rule also brought out a second hole: faust drops a fetched record whose partition
was paused after the fetch returned (a stream's buffer full, a partition recovering),
without seeking back, so the record is never read again in this session. With faust's
rule its offset is committed over (lost); with ours the partition's commits stop there.
`InOrderConsumer` hands over every record fetched for the partitions active when the
fetch returned (a rebalance or a stopped flow still drops them, and faust then seeks
back to the committed offsets).

A third hole is at the end of every rebalance. faust's recovery resumes the stream
partitions, seeks them to their committed offsets (`perform_seek`) and only then resumes
its flow control, which clears every stream's queue. The flow is active the whole time
(recovery needs it for the changelogs), so records fetched around the seek reach the
queues and are cleared unread, while the fetch position and faust's read offset are
already past them: they are not read again in this session. A worker started with a
backlog of Stripe events, its event loop back late from the seek (a loaded machine),
processed the first few of a partition, went on with the ones after those cleared, and
its commits stopped at the first cleared one (`test_stuck_commits`). So
`perform_seek` stops the flow before seeking; faust's recovery resumes it right after
clearing the queues, and reading starts again at the committed offsets.

A fourth hole is in that seek itself. faust drops records a fetch returned while its
flow was stopped (a rebalance, or the seek above) and relies on the seek to the
committed offsets to read them again; aiokafka seeks only partitions that have a
committed offset above 0. A partition never committed keeps its fetch position, past
the records dropped: on a fresh cluster (nothing committed yet) the Stripe events and
measurements written while the worker joined were never read, and a bill job sent
then billed nobody (`test_fresh_cluster`). So a stream partition without a committed
offset is sought to its beginning, where reading it started (the app's offset reset is
"earliest").

The consumer also fetches promptly for the bulk intake: the broker holds a fetch that
finds nothing new at most `FETCH_MAX_WAIT_MS`, and while the intake holds partitions
back a fetch waits at most `HELD_BACK_FETCH_WAIT_S` (see both for why).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.sensors import Sensor
from faust.transport.consumer import ensure_TP
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP, AppT, Message

from streams.usage.intake import BulkIntake

log = logging.getLogger(__name__)

# How long the broker may hold a fetch that finds no new record. aiokafka sends one fetch
# at a time to a broker, for the partitions whose last fetch is consumed; faust asks for
# 1.5 s. While the bulk intake holds `measurements` back, the fetch in flight is for the
# idle topics alone (Stripe events, commands), and the broker holds it the whole wait:
# the measurements the intake asks for again are fetched only after it, so the usage
# engine sat idle for up to that long after every few batches.
FETCH_MAX_WAIT_MS = 100

# While the bulk intake holds partitions back (`BulkIntake.pause`), aiokafka keeps the
# records it fetched for them buffered and fetches nothing new for them, so a fetch that
# waits for records of the partitions still active sleeps its whole timeout (faust asks
# for 1 s) unless another topic brings some; a partition the intake asks for again in
# the meantime is read only when that fetch returns: the usage engine sat idle up to a
# second after each batch. While any partition is held back, a fetch waits at most this.
HELD_BACK_FETCH_WAIT_S = 0.01


def _leading_run(offsets: list[int]) -> Iterator[int]:
    """The first offsets of a sorted list that follow each other without a hole."""
    previous: int | None = None
    for offset in offsets:
        if previous is not None and offset != previous + 1:
            return
        yield offset
        previous = offset


class PromptConsumerThread(AIOKafkaConsumerThread):
    """faust's aiokafka consumer thread, whose fetches the broker holds at most
    `FETCH_MAX_WAIT_MS` when there is nothing new."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer


class InOrderConsumer(Consumer):
    """faust's Kafka consumer, committing only offsets whose every predecessor was acked."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # per partition: the first offset delivered to a stream since it was assigned
        self._first_delivered: dict[TP, int] = {}
        # records of this topic go to the bulk intake instead of faust's streams
        self.intake: BulkIntake | None = None
        # per partition of the intake's topic: the offset after the last batch done
        self._intake_done: dict[TP, int] = {}
        self._committing: asyncio.Task[None] | None = None
        self._commit_again = False

    def use_intake(self, intake: BulkIntake) -> None:
        """Hand the records of `intake.topic` to `intake`, and commit what it marks done."""
        intake.pause = self.on_buffer_full
        intake.resume = self.on_buffer_drop
        self.intake = intake

    def intake_done(self, ends: dict[TP, int]) -> None:
        """The batch ending before these offsets is durable: they may be committed (in
        the order batches were taken, which the usage loop keeps)."""
        for tp, end in ends.items():
            if end > self._intake_done.get(tp, -1):
                self._intake_done[tp] = end
                self._acked[tp]  # faust commits only partitions listed here

    def commit_soon(self) -> None:
        """Commit now, not at the commit timer's next tick (a bulk batch became durable),
        so the committed position follows the usage engine within one commit round trip.
        One commit runs at a time; a call meanwhile makes it commit once more after."""
        if self._committing is not None and not self._committing.done():
            self._commit_again = True
            return
        self._committing = asyncio.ensure_future(self._commit_while_asked())

    async def _commit_while_asked(self) -> None:
        while True:
            self._commit_again = False
            try:
                await self.commit()
            except Exception:  # the commit timer tries again within its interval
                log.exception("committing the offsets of batches done failed")
                return
            if not self._commit_again:
                return

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        generation = self.app.consumer_generation_id
        if self.intake is not None and self.intake.paused:
            timeout = min(timeout, HELD_BACK_FETCH_WAIT_S)
        records, active = await super()._wait_next_records(timeout)
        # faust hands over a fetched record only if its partition is still in this set
        # when its turn comes; the live set loses a partition paused meanwhile (a stream's
        # buffer full, a table partition recovering), and faust then drops the record
        # without seeking back: the fetch position is past it, so it is never read again
        # in this session, and the partition's commits stop there for good. The partitions
        # active when the fetch returned are what the records were fetched for.
        if active is not None:
            active = set(active)
        intake = self.intake
        if intake is None or not records:
            return records, active
        topic = intake.topic
        # records fetched while a rebalance stopped the flow, or before it, are dropped:
        # they are read again from the committed offset
        if self.flow_active and generation == self.app.consumer_generation_id:
            for tp, fetched in records.items():
                if tp.topic == topic:  # aiokafka's TopicPartition: faust keys by its TP
                    intake.put(ensure_TP(tp), fetched)
        return {tp: fetched for tp, fetched in records.items() if tp.topic != topic}, active

    def delivered(self, tp: TP, offset: int) -> None:
        """A message of `tp` was handed to a stream (see `FirstDelivered`)."""
        if tp not in self._first_delivered:
            self._first_delivered[tp] = offset

    async def perform_seek(self) -> None:
        self._first_delivered.clear()  # reading starts again from the committed offsets
        # nothing reaches a stream until the recovery that seeks has cleared the streams'
        # queues and resumes the flow (`resume_flow`); a flow already stopped stays so
        stopped_here = self.flow_active
        if stopped_here:
            self.stop_flow()
        try:
            await super().perform_seek()
        except BaseException:
            if stopped_here:
                self.resume_flow()  # a seek that failed leaves the flow as it was
            raise

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        # aiokafka leaves a partition without a committed offset (or with 0) where its
        # fetch position is, past any record dropped while the flow was stopped
        never = [
            tp for tp, offset in committed.items() if not offset and not self._is_changelog_tp(tp)
        ]
        if never:
            try:
                await self._thread.seek_to_beginning(*never)
            except IllegalStateError as exc:  # a rebalance took some: its recovery seeks again
                log.info("not sought to their beginning (%s): %s", exc, sorted(never))
        return committed

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._first_delivered.pop(tp, None)
        if self.intake is not None:
            # the usage deltas of batches in flight land before the partitions go
            # (their next owner reads the log to its end), and their offsets are committed
            await self.intake.revoke(revoked)
            await self.commit()
            for tp in revoked:
                self._intake_done.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    def reading_started_at(self, tp: TP) -> int | None:
        """Where reading of `tp` started: the committed offset, or the first offset
        delivered when that is later; None while neither is known."""
        committed = self._committed_offset[tp]
        first = self._first_delivered.get(tp)
        if committed is None:
            return first
        if first is None:
            return committed
        return max(committed, first)

    def _new_offset(self, tp: TP) -> int | None:
        if self.intake is not None and tp.topic == self.intake.topic:
            return self._intake_done.pop(tp, None)
        acked = self._acked[tp]
        if not acked:
            return None
        self._fill_gaps(tp, acked)
        acked.sort()
        index = self._acked_index[tp]
        start = self.reading_started_at(tp)
        if start is not None:
            stale = 0
            while stale < len(acked) and acked[stale] < start:
                stale += 1  # acked before a seek took reading back past them
            if stale:
                index.difference_update(acked[:stale])
                del acked[:stale]
            if not acked or acked[0] != start:
                return None  # the message at the start is not acked yet
        run = list(_leading_run(acked))
        del acked[: len(run)]
        index.difference_update(run)
        return run[-1] + 1

    def _fill_gaps(self, tp: TP, acked: list[int]) -> None:
        """Offsets faust saw missing while fetching, up to the highest acked one, count
        as acked (faust's own rule)."""
        gaps = self._gap[tp]
        if not gaps:
            return
        highest = max(acked)
        found = sorted(gaps.overlap(0, highest), key=lambda interval: interval.begin)
        if not found:
            return
        missing = [offset for interval in found for offset in range(interval.begin, interval.end)]
        acked.extend(missing)
        gaps.chop(0, max(missing[-1], highest + 1))


class FirstDelivered(Sensor):
    """Tells the consumer which offset of a partition its streams got first: faust's
    streams report every message they take to the sensors (`on_message_in`), not to the
    consumer."""

    def __init__(self, app: AppT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        consumer = self.app.consumer
        if isinstance(consumer, InOrderConsumer):
            consumer.delivered(tp, offset)
