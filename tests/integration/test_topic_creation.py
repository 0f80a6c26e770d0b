from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from connectors.catalog_io import read_live
from connectors.environment import process_env
from connectors.kafka.admin import admin_client, create_topics, topic_config
from connectors.kafka.readiness import TopicsNotReady
from streams.settings import load_settings
from streams.tables import MAX_MESSAGE_BYTES
from streams.topics import Topics
from streams.worker_topics import worker_topics

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


TABLES = ("usage", "accounts", "accountplans", "bills", "billindex")


def test_topics_create_makes_the_worker_changelogs_too_with_leaders_known_on_return(
    kafka_bootstrap: str, unique: str
) -> None:
    env = process_env(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"w{unique}.",
        app_id=f"w{unique}",
        partitions=6,
    )
    env["COLUMNS"] = "200"
    command = [sys.executable, "-m", "connectors.cli", "topics", "create"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    changelogs = [f"w{unique}-{table}-changelog" for table in TABLES]
    # no wait here: `topics create` returned only once every partition had a leader
    metadata = admin_client(kafka_bootstrap).list_topics(timeout=10).topics
    for name in [*changelogs, f"w{unique}-__assignor-__leader", f"w{unique}.bills"]:
        assert name in done.stdout
        partitions = metadata[name].partitions.values()
        assert all(p.leader >= 0 for p in partitions), name
    for name in changelogs:
        assert len(metadata[name].partitions) == 6
        config = topic_config(kafka_bootstrap, name)
        assert config["cleanup.policy"] == "compact"
        assert config["max.message.bytes"] == str(MAX_MESSAGE_BYTES)

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "created" not in again.stdout


def test_a_changelog_with_a_smaller_message_limit_is_reported_with_the_fix(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = load_settings(app_id=f"c{unique}", topic_prefix=f"c{unique}.", data_dir=tmp_path)
    topics = worker_topics(settings)
    usage = next(t for t in topics if t.name == f"c{unique}-usage-changelog")
    admin = admin_client(kafka_bootstrap)
    small = {"cleanup.policy": "compact", "max.message.bytes": "1048588"}
    admin.create_topics([NewTopic(usage.name, usage.partitions, 1, config=small)])[
        usage.name
    ].result()
    problems = {o.name: o.problem for o in create_topics(kafka_bootstrap, topics) if o.problem}
    assert list(problems) == [usage.name]
    assert f"has max.message.bytes=1048588, expected {MAX_MESSAGE_BYTES}" in problems[usage.name]
    assert f"--add-config max.message.bytes={MAX_MESSAGE_BYTES}" in problems[usage.name]


def test_reading_the_catalog_of_a_topic_that_does_not_exist_says_how_to_create_it(
    kafka_bootstrap: str, unique: str
) -> None:
    with pytest.raises(TopicsNotReady) as failure:
        read_live(kafka_bootstrap, f"nowhere{unique}.catalog", timeout=2)
    assert f"nowhere{unique}.catalog: missing" in str(failure.value)
    assert "meterline topics create" in str(failure.value)
