"""The Stripe sink: consumes `bills` and writes them into Stripe.

Offsets are stored manually, only after the effect a message stands for is done:
  1. write to Stripe  2. record in stripe.sync  3. store the offset.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from connectors.health import serve_health
from connectors.metrics import Metrics
from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger(__name__)

BillHandler = Callable[[Message], None]


def where(message: Message) -> str:
    return f"{message.topic()}[{message.partition()}]@{message.offset()}"


def log_only(message: Message) -> None:
    log.info(
        "bill %s key=%s (%d bytes)", where(message), message.key(), len(message.value() or b"")
    )


class StripeSink:
    def __init__(
        self,
        settings: Settings,
        handler: BillHandler = log_only,
        *,
        group_id: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.handler = handler
        self.metrics = metrics or Metrics()
        self.group_id = group_id or f"{settings.app_id}-stripe-sink"
        self.assigned: list[TopicPartition] = []
        self.stopping = threading.Event()

    def consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "group.id": self.group_id,
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,  # stored by hand after the effect
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": 10_000,
            }
        )

    def status(self) -> dict[str, object]:
        return {
            "status": "ok",
            "assigned": [f"{tp.topic}[{tp.partition}]" for tp in self.assigned],
        }

    def run(self) -> None:
        server = serve_health("127.0.0.1", self.settings.sink_port, self.metrics, self.status)
        consumer = self.consumer()

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            self.assigned = sorted({*self.assigned, *partitions}, key=lambda tp: tp.partition)
            log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

        def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
            gone = {(p.topic, p.partition) for p in partitions}
            self.assigned = [tp for tp in self.assigned if (tp.topic, tp.partition) not in gone]

        consumer.subscribe([self.topics.bills], on_assign=on_assign, on_revoke=on_revoke)
        log.info("stripe sink consuming %s as group %s", self.topics.bills, self.group_id)
        try:
            while not self.stopping.is_set():
                message = consumer.poll(0.5)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", error)
                    continue
                self.handler(message)
                consumer.store_offsets(message=message)
                self.metrics.sink_bills.labels("synced").inc()
        finally:
            consumer.close()
            server.shutdown()
