"""The Stripe sink: consumes `bills` and writes them into Stripe.

Order for every bill version:
  1. write to Stripe (`sync.Syncer`; every write idempotent)
  2. produce the ledger record to `stripe.sync` (and any problem records to
     `stripe.sync.conflicts`) and wait for Kafka's acknowledgement
  3. store the offset (committed by the consumer's auto-commit)
A crash anywhere repeats at most this bill version, which the ledger and the
idempotency keys make harmless.

A 429, 5xx, network error or timeout pauses the bill's partition and seeks back to the
bill (quix-streams' back-pressure sink): the consumer keeps polling, so it stays in its
group and the other partitions keep flowing; after the backoff the partition resumes
and the whole version is tried again. Its offset is not stored until it succeeds, or is
dead-lettered after `stripe_retry_max_attempts`.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import stripe
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from pydantic import ValidationError

from connectors.health import serve_health
from connectors.kafka.consumer import poll_record
from connectors.kafka.producer import DeliveryError, new_producer
from connectors.metrics import Metrics
from connectors.stripe_sink.failures import Backoff, StripeFailure
from connectors.stripe_sink.ledger import Ledger, LedgerEntry, LedgerReader
from connectors.stripe_sink.limiter import Limiter, limiter_for
from connectors.stripe_sink.policy import SyncPolicy
from connectors.stripe_sink.records import Conflict, SyncProblem
from connectors.stripe_sink.stripe_api import StripeGateway, stripe_client
from connectors.stripe_sink.sync import Syncer, SyncRefused
from streams.kafka_access import client_config
from streams.schemas.bill import Bill
from streams.schemas.errors import error_text
from streams.settings import Settings
from streams.sources import source_of
from streams.topics import Topics

log = logging.getLogger(__name__)

PartitionKey = tuple[str, int]
ACK_TIMEOUT_S = 30.0
POLL_S = 0.2


def _key(message: Message) -> PartitionKey:
    return (str(message.topic()), int(message.partition() or 0))


@dataclass
class Outcome:
    """What one bill version came to: the ledger entry to record, the problems to report,
    and the label it is counted under."""

    label: str
    entry: LedgerEntry | None = None
    problems: list[SyncProblem] = field(default_factory=list)


@dataclass
class Attempts:
    offset: int
    count: int = 0


def sink_group(settings: Settings) -> str:
    """The sink's consumer group (its lag is read by the console)."""
    return f"{settings.app_id}-stripe-sink"


class StripeSink:
    def __init__(
        self,
        settings: Settings,
        *,
        client: stripe.StripeClient | None = None,
        limiter: Limiter | None = None,
        group_id: str | None = None,
        metrics: Metrics | None = None,
        workers: int = 4,
    ) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.client = client
        self.limiter = limiter or limiter_for(settings.stripe_requests_per_second)
        self.metrics = metrics or Metrics()
        self.group_id = group_id or sink_group(settings)
        self.policy = SyncPolicy.from_settings(settings)
        self.backoff = Backoff(
            settings.stripe_retry_base_s,
            settings.stripe_retry_max_s,
            settings.stripe_retry_max_attempts,
        )
        self.workers = workers
        self.ledger = Ledger(settings.partitions)  # bounded by the assignment
        self.assigned: list[TopicPartition] = []
        self.paused: dict[PartitionKey, float] = {}  # → monotonic time it resumes
        self.rewound: dict[PartitionKey, int] = {}  # → offset the next message must have
        self.attempts: dict[PartitionKey, Attempts] = {}
        self.outcomes: dict[str, int] = {}
        self.stopping = threading.Event()
        self.ready = threading.Event()  # ledger loaded, consuming

    def consumer(self) -> Consumer:
        return Consumer(self.consumer_config())

    def consumer_config(self) -> dict[str, Any]:
        config: dict[str, Any] = client_config(self.settings.kafka) | {
            "group.id": self.group_id,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "enable.auto.offset.store": False,  # stored by hand after the effect
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10_000,
        }
        if self.settings.stripe_sink_instance_id:
            config["group.instance.id"] = self.settings.stripe_sink_instance_id
        return config

    def status(self) -> dict[str, object]:
        return {
            "status": "ok",
            "ready": self.ready.is_set(),
            "assigned": [f"{tp.topic}[{tp.partition}]" for tp in self.assigned],
            "retrying": sorted(f"{t}[{p}]" for t, p in list(self.paused)),
            "ledgerEntries": len(self.ledger.entries),
            "outcomes": dict(self.outcomes),
        }

    # The loop -------------------------------------------------------------------------

    def run(self) -> None:
        settings = self.settings
        server = serve_health("127.0.0.1", settings.sink_port, self.metrics, self.status)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="stripe-sink")
        owned = ExitStack()  # a Stripe client made here (none given), closed last
        client = self.client or owned.enter_context(stripe_client(settings))
        gateway = StripeGateway(client, self.limiter, self.metrics)
        syncer = Syncer(gateway, self.policy, pool)
        producer = new_producer(settings.kafka, **{"linger.ms": 0})
        reader = LedgerReader(settings.kafka, self.topics.stripe_sync, self.ledger)
        consumer = self.consumer()
        try:
            loaded = reader.catch_up()
            log.info(
                "ledger %s: %d records, %d bills", reader.topic, loaded, len(self.ledger.entries)
            )
            consumer.subscribe(
                [self.topics.bills],
                on_assign=lambda c, parts: self._assigned(c, parts, reader),
                on_revoke=lambda c, parts: self._revoked(parts),
                on_lost=lambda c, parts: self._revoked(parts),
            )
            log.info("stripe sink consuming %s as group %s", self.topics.bills, self.group_id)
            self.ready.set()
            while not self.stopping.is_set():
                self._resume_due(consumer)
                message = poll_record(consumer, self._poll_timeout(), log, "consumer error")
                if message is None:
                    continue
                if self._stale(message):
                    continue
                self._consume(consumer, producer, syncer, message)
        finally:
            consumer.close()  # commits the offsets stored so far
            producer.flush(ACK_TIMEOUT_S)
            reader.close()
            pool.shutdown(wait=True)
            server.shutdown()
            server.server_close()
            owned.close()

    def _consume(
        self, consumer: Consumer, producer: Producer, syncer: Syncer, message: Message
    ) -> None:
        key = _key(message)
        attempts = self.attempts.get(key)
        if attempts is None or attempts.offset != message.offset():
            attempts = self.attempts[key] = Attempts(int(message.offset() or 0))
        # 1. write to Stripe (or decide there is nothing to write)
        try:
            outcome = self._outcome(syncer, message)
        except StripeFailure as failure:
            attempts.count += 1
            if not self.backoff.exhausted(attempts.count):
                delay = self.backoff.delay(attempts.count, failure.retry_after)
                self._retry_later(consumer, message, delay, str(failure))
                return
            outcome = self._gave_up(message, failure, attempts.count)
        # 2. record in stripe.sync (and report problems), acknowledged
        try:
            self._publish(producer, outcome)
        except DeliveryError as error:
            attempts.count += 1
            self._retry_later(consumer, message, self.backoff.delay(attempts.count), str(error))
            return
        if outcome.entry is not None:
            self.ledger.apply(outcome.entry)
        # 3. store the offset
        consumer.store_offsets(message=message)
        del self.attempts[key]
        self.outcomes[outcome.label] = self.outcomes.get(outcome.label, 0) + 1
        self.metrics.sink_bills.labels(outcome.label).inc()

    # 1. Stripe ------------------------------------------------------------------------

    def _outcome(self, syncer: Syncer, message: Message) -> Outcome:
        """Decides and (through the syncer) writes to Stripe; raises a retryable
        `StripeFailure` to try again later."""
        source = str(source_of(message))
        try:
            bill = Bill.model_validate_json(message.value() or b"")
        except ValidationError as error:
            return self._unreadable(message, error)
        previous = self.ledger.get(bill.id)
        if previous is not None and bill.version <= previous.version:
            log.debug(
                "%s bill %s v%d: synced already (v%d)",
                source,
                bill.id,
                bill.version,
                previous.version,
            )
            return Outcome("skipped_synced")
        if not self.policy.wants(bill):
            log.debug(
                "%s bill %s v%d: %s, not synced (approved-only)",
                source,
                bill.id,
                bill.version,
                bill.status,
            )
            return Outcome("skipped_trigger")
        mode = previous.mode if previous is not None else self.policy.mode_for(bill)
        try:
            result = syncer.sync(bill, previous, mode)
        except SyncRefused as refused:
            info = refused.failure.info.as_json() if refused.failure else None
            return self._dead_letter(source, bill, refused.reason, info)
        except StripeFailure as failure:
            if failure.retryable:
                raise
            return self._dead_letter(source, bill, str(failure), failure.info.as_json())
        entry = result.entry
        problems = [self._problem(source, bill, entry, c) for c in result.conflicts]
        log.info(
            "%s bill %s v%d %s (%s mode): %d Stripe writes, %d items, invoice %s%s%s",
            source,
            bill.id,
            bill.version,
            bill.status,
            mode,
            result.writes,
            len(entry.items),
            entry.invoiceId,
            ", finalized" if entry.finalized else "",
            f", {len(problems)} new problems" if problems else "",
        )
        return Outcome("conflict" if entry.conflicts else "synced", entry, problems)

    def _problem(
        self, source: str, bill: Bill, entry: LedgerEntry, conflict: Conflict
    ) -> SyncProblem:
        line = (
            conflict.line_id if conflict.line_id and not conflict.line_id.startswith("*") else None
        )
        log.warning(
            "%s bill %s v%d %s: %s", source, bill.id, bill.version, conflict.kind, conflict.reason
        )
        return SyncProblem(
            kind=conflict.kind,
            reason=conflict.reason,
            source=source,
            billId=bill.id,
            version=bill.version,
            accountCode=bill.accountCode,
            invoiceId=entry.invoiceId,
            lineId=line,
            itemId=conflict.item_id,
            stripeError=conflict.stripe_error.as_json() if conflict.stripe_error else None,
        )

    def _dead_letter(
        self, source: str, bill: Bill, reason: str, stripe_error: dict[str, Any] | None
    ) -> Outcome:
        log.error("%s bill %s v%d dead-lettered: %s", source, bill.id, bill.version, reason)
        problem = SyncProblem(
            kind="dead_letter",
            reason=reason,
            source=source,
            billId=bill.id,
            version=bill.version,
            accountCode=bill.accountCode,
            stripeError=stripe_error,
        )
        return Outcome("dead_letter", None, [problem])

    def _unreadable(self, message: Message, error: ValidationError) -> Outcome:
        reasons = error_text(error, whole="value")
        source = str(source_of(message))
        log.error("%s is not a bill, dead-lettered: %s", source, reasons)
        problem = SyncProblem(
            kind="dead_letter",
            reason=f"not a Bill: {reasons}",
            source=source,
            accountCode=(message.key() or b"").decode(errors="replace") or None,
            payload=(message.value() or b"").decode(errors="replace"),
        )
        return Outcome("dead_letter", None, [problem])

    def _gave_up(self, message: Message, failure: StripeFailure, attempts: int) -> Outcome:
        reason = f"gave up after {attempts} attempts: {failure}"
        try:
            bill = Bill.model_validate_json(message.value() or b"")
        except ValidationError:  # it was readable a moment ago
            raise RuntimeError(f"{source_of(message)} became unreadable") from None
        return self._dead_letter(str(source_of(message)), bill, reason, failure.info.as_json())

    # 2. Kafka -------------------------------------------------------------------------

    def _publish(self, producer: Producer, outcome: Outcome) -> None:
        """Produces the outcome's records and waits until Kafka acknowledged all of them."""
        failures: list[str] = []

        def delivered(error: Any, _: Message) -> None:
            if error is not None:
                failures.append(str(error))

        records = [
            (self.topics.stripe_conflicts, (p.billId or p.source).encode(), p.model_dump_json())
            for p in outcome.problems
        ]
        if outcome.entry is not None:
            entry = outcome.entry
            records.append(
                (self.topics.stripe_sync, entry.billId.encode(), entry.model_dump_json())
            )
        if not records:
            return
        for topic, key, value in records:
            producer.produce(topic, key=key, value=value.encode(), on_delivery=delivered)
        if producer.flush(ACK_TIMEOUT_S) or failures:
            raise DeliveryError(
                f"Kafka did not acknowledge the sink's records: {failures or 'timeout'}"
            )

    # Back-pressure: pause, seek back, resume later ---------------------------------------

    def _retry_later(self, consumer: Consumer, message: Message, delay: float, why: str) -> None:
        key = _key(message)
        offset = int(message.offset() or 0)
        partition = TopicPartition(key[0], key[1], offset)
        consumer.pause([partition])
        consumer.seek(partition)  # raises if it cannot: a crash, not a skipped bill
        self.paused[key] = time.monotonic() + delay
        self.rewound[key] = offset
        self.outcomes["retry"] = self.outcomes.get("retry", 0) + 1
        self.metrics.sink_bills.labels("retry").inc()
        log.warning("%s: retrying in %.2fs: %s", source_of(message), delay, why)

    def _resume_due(self, consumer: Consumer) -> None:
        now = time.monotonic()
        for key, due in list(self.paused.items()):
            if due <= now:
                consumer.resume([TopicPartition(*key)])
                del self.paused[key]

    def _poll_timeout(self) -> float:
        if not self.paused:
            return POLL_S
        return max(0.0, min(POLL_S, min(self.paused.values()) - time.monotonic()))

    def _stale(self, message: Message) -> bool:
        """Messages fetched before a pause are dropped; after the seek, the partition must
        start again at the bill that failed (anything else would skip it)."""
        key = _key(message)
        if key in self.paused:
            return True
        expected = self.rewound.pop(key, None)
        if expected is not None and message.offset() != expected:
            raise RuntimeError(
                f"{source_of(message)} arrived where offset {expected} was expected after a seek"
            )
        return False

    # Rebalances -----------------------------------------------------------------------

    def _assigned(
        self, consumer: Consumer, partitions: list[TopicPartition], reader: LedgerReader
    ) -> None:
        # Another process may have synced bills of these partitions: read its ledger records
        # (from the beginning for a partition this sink did not own: it kept none of them).
        owned = {tp.partition for tp in self.assigned} | {tp.partition for tp in partitions}
        if self.ledger.own(owned):
            reader.rewind()
        read = reader.catch_up()
        consumer.resume(partitions)
        self._forget(partitions)
        self.assigned = sorted({*self.assigned, *partitions}, key=lambda tp: tp.partition)
        log.info(
            "assigned %s (ledger: %d new records, %d bills)",
            ", ".join(f"{p.topic}[{p.partition}]" for p in partitions),
            read,
            len(self.ledger.entries),
        )

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        gone = {(p.topic, p.partition) for p in partitions}
        self.assigned = [tp for tp in self.assigned if (tp.topic, tp.partition) not in gone]
        self.ledger.own({tp.partition for tp in self.assigned})  # drops the bills it lost

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            key = (p.topic, p.partition)
            self.paused.pop(key, None)
            self.rewound.pop(key, None)
            self.attempts.pop(key, None)
