from __future__ import annotations

import pytest

from connectors.kafka.admin import create_topics, topic_config
from streams.topics import Topics

pytestmark = pytest.mark.integration


def test_topic_creation_is_idempotent_and_sets_compaction(
    kafka_bootstrap: str, unique: str
) -> None:
    topics = Topics(prefix=f"t{unique}.", partitions=3)
    first = create_topics(kafka_bootstrap, topics.all())
    assert all(outcome.created for outcome in first)
    second = create_topics(kafka_bootstrap, topics.all())
    assert not any(outcome.created for outcome in second)
    assert not any(outcome.problem for outcome in second)
    assert topic_config(kafka_bootstrap, topics.catalog)["cleanup.policy"] == "compact"
    assert topic_config(kafka_bootstrap, topics.stripe_sync)["cleanup.policy"] == "compact"
    assert topic_config(kafka_bootstrap, topics.measurements)["cleanup.policy"] == "delete"


def test_a_partition_count_mismatch_is_reported(kafka_bootstrap: str, unique: str) -> None:
    create_topics(kafka_bootstrap, Topics(prefix=f"m{unique}.", partitions=2).all())
    outcomes = create_topics(kafka_bootstrap, Topics(prefix=f"m{unique}.", partitions=4).all())
    problems = {o.name: o.problem for o in outcomes if o.problem}
    assert f"m{unique}.measurements" in problems
    assert "has 2 partitions, expected 4" in problems[f"m{unique}.measurements"]
