"""Alert webhooks: every record of `alerts` POSTed, signed, to one configured URL.

    meterline alert-webhooks    (METERLINE_ALERT_WEBHOOK_URL, METERLINE_ALERT_WEBHOOK_SECRET)

Each alert goes as its JSON (`alert.json`) with the headers

    Meterline-Alert-Id: <the alert's id>
    Meterline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

(`verify` checks one, as a receiver would). For each record, in partition order:
  1. POST it until the receiver answers (retrying, below)
  2. store its offset (committed by the consumer every second and when it stops)
so a crash between 1 and 2 sends the same alert again: receivers de-duplicate by
`Meterline-Alert-Id` (the worker may publish an alert twice for the same reason).
408, 429, 5xx, a timeout or no connection: sent again after a delay that doubles from
`alert_webhook_retry_base_s` to `alert_webhook_retry_max_s`, polling in between so the
consumer keeps its partitions; nothing after it on the partition goes first. Any other
status is the receiver refusing this alert: logged with its id and
`topic[partition]@offset`, counted, and passed (the same request would be refused again).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from dataclasses import dataclass

import httpx
import orjson
from confluent_kafka import Consumer, Message, TopicPartition

from connectors.kafka.consumer import poll_record
from streams.settings import Settings
from streams.sources import source_of
from streams.topics import Topics

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Meterline-Signature"
ID_HEADER = "Meterline-Alert-Id"
RETRIED_STATUSES = frozenset({408, 429})


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Meterline-Signature` header of `body` signed at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance_s: int = 300) -> bool:
    """Whether `header` signs `body` with `secret`, at most `tolerance_s` before `now`."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    expected = signature(secret, timestamp, body).rsplit("v1=", 1)[1]
    fresh = abs(now - timestamp) <= tolerance_s
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


def retried(status: int | None) -> bool:
    """Whether an answer (None: none came) is worth sending the alert again."""
    return status is None or status in RETRIED_STATUSES or status >= 500


@dataclass
class Attempt:
    offset: int
    count: int = 0


class AlertWebhooks:
    """The connector's loop; `stopping` ends it (the offsets stored so far are committed)."""

    def __init__(self, settings: Settings, *, group_id: str | None = None) -> None:
        if settings.alert_webhook_url is None or settings.alert_webhook_secret is None:
            raise ValueError(
                "METERLINE_ALERT_WEBHOOK_URL and METERLINE_ALERT_WEBHOOK_SECRET are required"
            )
        self.settings = settings
        self.url = settings.alert_webhook_url
        self.secret = settings.alert_webhook_secret.get_secret_value()
        self.topic = Topics.from_settings(settings).alerts
        self.group_id = group_id or f"{settings.app_id}-alert-webhooks"
        self.stopping = threading.Event()
        self.outcomes: dict[str, int] = {}
        self.attempts: dict[int, Attempt] = {}  # by partition

    def run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "group.id": self.group_id,
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 1000,
                "enable.auto.offset.store": False,  # stored by hand after the POST
                "auto.offset.reset": "earliest",
            }
        )
        client = httpx.Client(timeout=self.settings.alert_webhook_timeout_s)
        try:
            consumer.subscribe([self.topic])
            log.info("alert webhooks: %s -> %s as group %s", self.topic, self.url, self.group_id)
            while not self.stopping.is_set():
                message = poll_record(consumer, 0.5, log, "alert webhooks consumer")
                if message is not None:
                    self._deliver(consumer, client, message)
        finally:
            consumer.close()
            client.close()

    def _deliver(self, consumer: Consumer, client: httpx.Client, message: Message) -> None:
        source = source_of(message)
        body = message.value() or b""
        alert_id = _alert_id(body)
        partition, offset = int(message.partition() or 0), int(message.offset() or 0)
        attempt = self.attempts.get(partition)
        if attempt is None or attempt.offset != offset:
            attempt = self.attempts[partition] = Attempt(offset)
        status = self._post(client, body, alert_id, source)
        if retried(status):
            attempt.count += 1
            delay = min(
                self.settings.alert_webhook_retry_base_s * 2 ** (attempt.count - 1),
                self.settings.alert_webhook_retry_max_s,
            )
            log.warning(
                "alert %s (%s): answer %s, attempt %d; again in %.1f s",
                alert_id,
                source,
                status,
                attempt.count,
                delay,
            )
            self._count("retry")
            consumer.seek(TopicPartition(self.topic, partition, offset))
            self.stopping.wait(delay)
            return
        if 200 <= (status or 0) < 300:
            self._count("delivered")
        else:
            log.error("alert %s (%s): the receiver refused it with %s", alert_id, source, status)
            self._count("refused")
        consumer.store_offsets(message=message)
        del self.attempts[partition]

    def _post(self, client: httpx.Client, body: bytes, alert_id: str, source: object) -> int | None:
        headers = {
            "Content-Type": "application/json",
            ID_HEADER: alert_id,
            SIGNATURE_HEADER: signature(self.secret, int(time.time()), body),
        }
        try:
            return client.post(self.url, content=body, headers=headers).status_code
        except httpx.HTTPError as error:
            log.warning("alert %s (%s): %r", alert_id, source, error)
            return None

    def _count(self, label: str) -> None:
        self.outcomes[label] = self.outcomes.get(label, 0) + 1


def _alert_id(body: bytes) -> str:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    return str(document.get("id", "")) if isinstance(document, dict) else ""
