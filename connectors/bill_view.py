"""A read model of the `bills` topic: the latest version of every bill, in memory.

A downstream consumer like any other: it reads every partition from the beginning
(no consumer group offsets, no commits) and keeps, per bill id, the snapshot with the
highest version, and a summary of the versions it saw (`versions`: the bill's history
in the console). Serves the HTTP edge's bill reads.

Bounded, so that an edge that runs for years does not hold every bill ever: a bill
whose period ended more than `retention_days` ago is dropped (and not taken in when
read), and of each bill only the last `max_versions` version summaries are kept. Older
bills stay on the `bills` topic for any consumer that wants them.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime

import orjson
from confluent_kafka import Consumer, TopicPartition

from connectors.kafka.consumer import poll_record
from streams.kafka_access import Kafka, client_config
from streams.sources import source_of

log = logging.getLogger(__name__)
VERSION_FIELDS = ("version", "status", "reason", "total", "generatedAt", "statusChangedAt")
RETENTION_DAYS = 400  # a year of monthly bills and the period before it
MAX_VERSIONS = 50
SWEEP_EVERY_S = 3600.0
DAY_S = 86_400


class BillView:
    def __init__(
        self,
        kafka: Kafka,
        topic: str,
        *,
        retention_days: int = RETENTION_DAYS,
        max_versions: int = MAX_VERSIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.retention_s = retention_days * DAY_S
        self.max_versions = max_versions
        self.clock = clock
        # id -> (version, account, period end (epoch s), json)
        self._bills: dict[str, tuple[int, str, float, bytes]] = {}
        self._versions: dict[str, dict[int, dict[str, str]]] = {}  # id -> version -> summary
        self._next_sweep = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bill-view", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def apply(self, value: bytes) -> None:
        document = orjson.loads(value)
        bill_id, version = document["id"], int(document["version"])
        ends = datetime.fromisoformat(document["endDate"]).timestamp()
        summary = {name: str(document.get(name)) for name in VERSION_FIELDS}
        now = self.clock()
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            if ends < now - self.retention_s:
                return
            versions = self._versions.setdefault(bill_id, {})
            versions[version] = summary
            if len(versions) > self.max_versions:
                del versions[min(versions)]
            current = self._bills.get(bill_id)
            if current is None or current[0] < version:
                self._bills[bill_id] = (version, document["accountCode"], ends, value)

    def _sweep(self, now: float) -> None:
        """Drop the bills whose period ended before the retention (under the lock)."""
        oldest = now - self.retention_s
        for bill_id in [b for b, entry in self._bills.items() if entry[2] < oldest]:
            del self._bills[bill_id]
            self._versions.pop(bill_id, None)
        self._next_sweep = now + SWEEP_EVERY_S

    def size(self) -> dict[str, int]:
        """What the view holds: bills, version summaries, bytes of bill documents."""
        with self._lock:
            return {
                "bills": len(self._bills),
                "versions": sum(len(v) for v in self._versions.values()),
                "bytes": sum(len(entry[3]) for entry in self._bills.values()),
            }

    def bill(self, bill_id: str) -> bytes | None:
        with self._lock:
            entry = self._bills.get(bill_id)
        return entry[3] if entry else None

    def versions(self, bill_id: str) -> list[dict[str, str]]:
        """A summary of every version of the bill seen (`VERSION_FIELDS`), oldest first."""
        with self._lock:
            seen = self._versions.get(bill_id, {})
            return [seen[version] for version in sorted(seen)]

    def bills(self, account: str | None = None) -> list[bytes]:
        with self._lock:
            entries = list(self._bills.values())
        return [raw for _, owner, _, raw in entries if account is None or owner == account]

    def _run(self) -> None:
        consumer = Consumer(
            client_config(
                self.kafka,
                **{
                    "group.id": f"bill-view-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                },
            )
        )
        partitions: list[int] = []
        try:
            while not self._stop.is_set() and not partitions:
                try:
                    metadata = consumer.list_topics(self.topic, timeout=5).topics[self.topic]
                except Exception as exc:
                    log.warning("bill view: %s not readable yet (%s)", self.topic, exc)
                    self._stop.wait(1)
                    continue
                partitions = sorted(metadata.partitions)
                if not partitions:
                    self._stop.wait(1)
            consumer.assign([TopicPartition(self.topic, p, 0) for p in partitions])
            while not self._stop.is_set():
                message = poll_record(consumer, 0.2, log, "bill view")
                if message is None:
                    continue
                try:
                    self.apply(message.value() or b"")
                except (ValueError, KeyError) as exc:
                    log.error("bill view: %s is not a bill (%s)", source_of(message), exc)
        finally:
            consumer.close()
