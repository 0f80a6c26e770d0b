"""Topic administration on any Kafka cluster: idempotent creation and inspection."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from streams.topics import ResolvedTopic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicOutcome:
    name: str
    created: bool
    partitions: int
    problem: str | None = None


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topics(
    bootstrap: str, topics: list[ResolvedTopic], replication_factor: int = 1, timeout: float = 30.0
) -> list[TopicOutcome]:
    """Create what is missing; leave existing topics alone but report a partition mismatch."""
    admin = admin_client(bootstrap)
    existing = admin.list_topics(timeout=timeout).topics
    outcomes: list[TopicOutcome] = []
    to_create = [t for t in topics if t.name not in existing]
    futures = (
        admin.create_topics(
            [
                NewTopic(t.name, t.partitions, replication_factor, config=t.config)
                for t in to_create
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        if to_create
        else {}
    )
    for topic in topics:
        if topic.name in futures:
            try:
                futures[topic.name].result()
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            else:
                log.info("created topic %s (%d partitions)", topic.name, topic.partitions)
                outcomes.append(TopicOutcome(topic.name, True, topic.partitions))
                continue
        actual = _partition_count(admin, topic.name, timeout)
        problem = None
        if actual != topic.partitions:
            problem = (
                f"has {actual} partitions, expected {topic.partitions}: co-partitioning "
                "needs every per-account topic to have the same count"
            )
        outcomes.append(TopicOutcome(topic.name, False, actual, problem))
    return outcomes


def _partition_count(admin: AdminClient, name: str, timeout: float) -> int:
    """Partitions of an existing topic (a just-created one reports 0 until its leaders exist)."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(name, timeout=timeout).topics[name]
        if metadata.partitions or time.monotonic() > deadline:
            return len(metadata.partitions)
        time.sleep(0.1)


def topic_config(bootstrap: str, name: str, timeout: float = 10.0) -> dict[str, str]:
    admin = admin_client(bootstrap)
    resource = ConfigResource(ResourceType.TOPIC, name)
    result = admin.describe_configs([resource], request_timeout=timeout)[resource].result()
    return {key: entry.value for key, entry in result.items()}


def delete_topics(bootstrap: str, names: list[str], timeout: float = 30.0) -> None:
    admin = admin_client(bootstrap)
    for future in admin.delete_topics(names, operation_timeout=timeout).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
