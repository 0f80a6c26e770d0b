"""Topic administration on any Kafka cluster: idempotent creation and inspection."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from connectors.kafka.readiness import wait_for_leaders
from streams.kafka_access import Kafka, client_config
from streams.topics import ResolvedTopic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicOutcome:
    name: str
    created: bool
    partitions: int
    problem: str | None = None


def admin_client(kafka: Kafka) -> AdminClient:
    return AdminClient(client_config(kafka))


def create_topics(
    kafka: Kafka, topics: list[ResolvedTopic], replication_factor: int = 1, timeout: float = 30.0
) -> list[TopicOutcome]:
    """Create what is missing, then wait until every partition of every topic has a leader.

    Existing topics are left alone; a partition count or a setting (cleanup policy,
    `max.message.bytes`, ...) that differs from the declaration is reported as a problem.
    Raises TopicsNotReady when leaders are still unknown after `timeout`.
    """
    admin = admin_client(kafka)
    existing = admin.list_topics(timeout=timeout).topics
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
    created: set[str] = set()
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        else:
            created.add(name)
    metadata = wait_for_leaders(admin, [t.name for t in topics], timeout)
    configs = _configs(admin, [t.name for t in topics if t.name not in created], timeout)
    outcomes = []
    for topic in topics:
        partitions = len(metadata[topic.name].partitions)
        if topic.name in created:
            log.info("created topic %s (%d partitions)", topic.name, partitions)
        problems = _problems(topic, partitions, configs.get(topic.name, {}))
        outcomes.append(
            TopicOutcome(topic.name, topic.name in created, partitions, "; ".join(problems) or None)
        )
    return outcomes


def _problems(topic: ResolvedTopic, partitions: int, actual: dict[str, str]) -> list[str]:
    """How an existing topic differs from its declaration (nothing for a new one)."""
    problems = []
    if partitions != topic.partitions:
        problems.append(
            f"has {partitions} partitions, expected {topic.partitions}: co-partitioning "
            "needs every per-account topic to have the same count"
        )
    if not actual:
        return problems
    wanted = {"cleanup.policy": "delete", **topic.config}
    for key, value in sorted(wanted.items()):
        if actual.get(key) != value:
            problems.append(
                f"has {key}={actual.get(key)}, expected {value} (kafka-configs.sh --alter "
                f"--entity-type topics --entity-name {topic.name} --add-config {key}={value})"
            )
    return problems


def _configs(admin: AdminClient, names: list[str], timeout: float) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=timeout)
    return {
        resource.name: {key: entry.value for key, entry in future.result().items()}
        for resource, future in futures.items()
    }


def topic_config(kafka: Kafka, name: str, timeout: float = 10.0) -> dict[str, str]:
    admin = admin_client(kafka)
    resource = ConfigResource(ResourceType.TOPIC, name)
    result = admin.describe_configs([resource], request_timeout=timeout)[resource].result()
    return {key: entry.value for key, entry in result.items()}


def delete_topics(kafka: Kafka, names: list[str], timeout: float = 30.0) -> None:
    admin = admin_client(kafka)
    for future in admin.delete_topics(names, operation_timeout=timeout).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
