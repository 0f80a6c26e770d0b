"""Waiting until topics can be written and read: every partition has a leader.

A topic that was just created is not usable at once: the broker answers metadata
requests without it, or with partitions whose leader is still -1, for a short while.
A client that asks then fails (`NOT_LEADER_FOR_PARTITION` from a watermark query) or,
worse, caches the gap (aiokafka's producer then waits for that leader for good). Every
tool that creates topics or reads right after their creation waits here first, bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from connectors.waiting import eventually

CREATE_HINT = "run `meterline topics create` (idempotent) against this cluster first"


class MetadataSource(Protocol):
    """Anything with confluent-kafka's `list_topics` (AdminClient, Consumer, Producer)."""

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...


class TopicsNotReady(RuntimeError):
    """Topics that are missing or have partitions without a leader after the wait."""

    def __init__(self, waiting: Mapping[str, str], timeout: float) -> None:
        self.waiting = dict(waiting)
        missing = sorted(name for name, why in waiting.items() if why == "missing")
        lines = [f"  {name}: {why}" for name, why in sorted(waiting.items())]
        hint = f"\n{CREATE_HINT}" if missing else ""
        super().__init__(
            f"{len(waiting)} topics not ready after {timeout:.0f}s:\n" + "\n".join(lines) + hint
        )


def not_ready(topics: Mapping[str, Any], names: Iterable[str]) -> dict[str, str]:
    """Why each of `names` cannot be used yet, from a `list_topics().topics` mapping.

    A topic is ready when it exists without error, has partitions, and every partition
    has a leader and no error.
    """
    waiting: dict[str, str] = {}
    for name in names:
        metadata = topics.get(name)
        if metadata is None or _unknown(metadata.error):
            waiting[name] = "missing"
        elif metadata.error is not None:
            waiting[name] = f"error {metadata.error}"
        elif not metadata.partitions:
            waiting[name] = "no partitions yet"
        else:
            leaderless = sorted(
                p.id for p in metadata.partitions.values() if p.leader < 0 or p.error is not None
            )
            if leaderless:
                waiting[name] = "no leader yet for partitions " + ", ".join(map(str, leaderless))
    return waiting


def _unknown(error: Any) -> bool:
    return error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def wait_for_leaders(
    client: MetadataSource, names: Iterable[str], timeout: float = 30.0, interval: float = 0.1
) -> dict[str, Any]:
    """Wait until every topic of `names` exists and each partition has a leader.

    Returns the topics' metadata; raises TopicsNotReady (naming each topic and why)
    after `timeout`, and KafkaException when the cluster does not answer at all.
    """
    wanted = list(dict.fromkeys(names))
    deadline = time.monotonic() + timeout
    waiting: dict[str, str] = {}

    def ready() -> tuple[dict[str, Any]] | None:
        nonlocal waiting
        topics = client.list_topics(timeout=max(deadline - time.monotonic(), 1.0)).topics
        waiting = not_ready(topics, wanted)
        # A 1-tuple: done (truthy) even when no topic is wanted.
        return None if waiting else ({name: topics[name] for name in wanted},)

    try:
        (metadata,) = eventually(ready, timeout, interval, "topic leaders")
    except TimeoutError:
        raise TopicsNotReady(waiting, timeout) from None
    return metadata


def watermark_offsets(
    consumer: Any, tp: TopicPartition, deadline: float, interval: float = 0.1
) -> tuple[int, int]:
    """(low, high) of a partition, retrying the errors of a leader that is just moving in
    (e.g. `NOT_LEADER_FOR_PARTITION` right after creation) until `deadline` (monotonic)."""
    while True:
        try:
            remaining = max(deadline - time.monotonic(), 0.1)
            low, high = consumer.get_watermark_offsets(tp, timeout=remaining)
            return int(low), int(high)
        except KafkaException:
            # e.g. NOT_LEADER_FOR_PARTITION (not flagged retriable on this call): a real
            # problem outlasts the deadline and is raised then.
            if time.monotonic() >= deadline:
                raise
            time.sleep(interval)
