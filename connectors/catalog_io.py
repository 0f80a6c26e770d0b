"""Read and publish the catalog: YAML file → validated Catalog → compacted `catalog` topic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Consumer, TopicPartition

from connectors.kafka.producer import new_producer
from connectors.kafka.readiness import wait_for_leaders, watermark_offsets
from streams.kafka_access import Kafka, client_config
from streams.schemas.catalog import SECTIONS, Catalog, CatalogError, parse_catalog_key


def load_document(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CatalogError([f"{path}: no such file"]) from None
    except yaml.YAMLError as exc:
        raise CatalogError([f"{path}: not valid YAML: {exc}"]) from None
    if not isinstance(document, dict):
        raise CatalogError([f"{path}: the top level must be a mapping of sections"])
    return document


def read_live(kafka: Kafka, topic: str, timeout: float = 15.0) -> dict[str, dict[str, Any]]:
    """Every live item on the catalog topic (latest value per key; tombstones removed).

    A topic created a moment ago may have no leader yet: wait for it (at most
    `timeout`, then TopicsNotReady says which topic and why).
    """
    consumer = Consumer(
        client_config(
            kafka,
            **{"group.id": f"catalog-reader-{uuid.uuid4().hex}", "enable.auto.commit": False},
        )
    )
    live: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    try:
        metadata = wait_for_leaders(consumer, [topic], timeout)[topic]
        for partition in metadata.partitions:
            low, high = watermark_offsets(consumer, TopicPartition(topic, partition), deadline)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            position = low
            while position < high:
                message = consumer.poll(timeout)
                if message is None:
                    raise TimeoutError(f"reading {topic}[{partition}] timed out at {position}")
                if message.error():
                    continue
                position = (message.offset() or position) + 1
                key = (message.key() or b"").decode()
                if message.value() is None:
                    live.pop(key, None)
                else:
                    live[key] = orjson.loads(message.value() or b"null")
    finally:
        consumer.close()
    return live


def merged_catalog(live: Mapping[str, Mapping[str, Any]], document: Mapping[str, Any]) -> Catalog:
    """Validate the file as a whole, with references resolved against what is already live."""
    Catalog.from_documents(document)  # every error of the file itself, with its path
    by_kind = {kind: section for section, kind in SECTIONS.items()}
    combined: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key, value in live.items():
        kind, code = parse_catalog_key(key)
        combined[by_kind[kind]][code] = value
    for section in SECTIONS:
        for item in document.get(section) or []:
            combined[section][item["code"]] = item
    return Catalog.from_documents({s: list(items.values()) for s, items in combined.items()})


def publish(
    kafka: Kafka,
    topic: str,
    document: Mapping[str, Any],
    *,
    prune: bool = False,
    live: Mapping[str, Any] | None = None,
) -> tuple[list[str], list[str]]:
    """Publish every item of `document`; with `prune`, tombstone live items not in it.

    Returns (published keys, deleted keys). Nothing is published when validation fails.
    """
    catalog = Catalog.from_documents(document)
    items = catalog.entries()
    deleted = sorted(set(live or {}) - {key for key, _ in items}) if prune else []
    producer = new_producer(kafka, **{"compression.type": "none"})
    for key, model in items:
        producer.produce(topic, key=key.encode(), value=orjson.dumps(model.model_dump(mode="json")))
    for key in deleted:
        producer.produce(topic, key=key.encode(), value=None)
    remaining = producer.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} catalog items were not acknowledged by Kafka")
    return [key for key, _ in items], deleted
