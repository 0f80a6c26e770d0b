"""When is a topic usable: it exists and every partition has a leader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError

from connectors.kafka.readiness import TopicsNotReady, not_ready, wait_for_leaders


@dataclass
class Partition:
    id: int
    leader: int = 1
    error: Any = None


@dataclass
class Topic:
    partitions: dict[int, Partition] = field(default_factory=dict)
    error: Any = None


def topic(*leaders: int) -> Topic:
    return Topic({n: Partition(n, leader) for n, leader in enumerate(leaders)})


def test_a_topic_whose_partitions_all_have_a_leader_is_ready() -> None:
    assert not_ready({"bills": topic(1, 1, 2)}, ["bills"]) == {}


def test_a_partition_without_a_leader_is_named() -> None:
    assert not_ready({"bills": topic(1, -1, 1, -1)}, ["bills"]) == {
        "bills": "no leader yet for partitions 1, 3"
    }


def test_a_missing_topic_and_one_still_without_partitions_are_told_apart() -> None:
    unknown = Topic(error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    waiting = not_ready({"a": unknown, "b": Topic()}, ["a", "b", "c"])
    assert waiting == {"a": "missing", "b": "no partitions yet", "c": "missing"}


class Cluster:
    """A `list_topics` whose answers change: a topic's leader arrives on the third call."""

    def __init__(self, answers: list[dict[str, Topic]]) -> None:
        self.answers = answers
        self.calls = 0

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return type("Metadata", (), {"topics": answer})()


def test_waiting_returns_once_the_leader_is_known() -> None:
    cluster = Cluster([{}, {"catalog": topic(-1)}, {"catalog": topic(1)}])
    metadata = wait_for_leaders(cluster, ["catalog"], timeout=5, interval=0)
    assert cluster.calls == 3
    assert list(metadata["catalog"].partitions) == [0]


def test_waiting_gives_up_naming_each_topic_and_how_to_create_it() -> None:
    cluster = Cluster([{"bills": topic(-1)}])
    with pytest.raises(TopicsNotReady) as failure:
        wait_for_leaders(cluster, ["bills", "catalog"], timeout=0.05, interval=0.01)
    message = str(failure.value)
    assert "bills: no leader yet for partitions 0" in message
    assert "catalog: missing" in message
    assert "meterline topics create" in message
