"""The worker's topics come from the app's own declarations, changelogs included."""

from __future__ import annotations

from pathlib import Path

from faust.assignor.leader_assignor import LeaderAssignor

from streams.app import create_app
from streams.settings import Settings, load_settings
from streams.tables import MAX_MESSAGE_BYTES, account_table
from streams.topics import Topics
from streams.worker_topics import app_topics, worker_topics

TABLES = ("usage", "accounts", "accountplans", "bills", "billindex")


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return load_settings(data_dir=tmp_path, **overrides)


def test_every_table_changelog_is_declared_compacted_with_the_table_value_limit(
    tmp_path: Path,
) -> None:
    topics = {t.name: t for t in worker_topics(settings(tmp_path, app_id="acme", partitions=6))}
    for table in TABLES:
        changelog = topics[f"acme-{table}-changelog"]
        assert changelog.partitions == 6
        assert changelog.config == {
            "cleanup.policy": "compact",
            "max.message.bytes": str(MAX_MESSAGE_BYTES),
        }


def test_the_declared_topics_and_the_leader_topic_are_included_once(tmp_path: Path) -> None:
    s = settings(tmp_path, app_id="acme", topic_prefix="eu.", partitions=4)
    names = [t.name for t in worker_topics(s)]
    assert len(names) == len(set(names))
    assert set(t.name for t in Topics.from_settings(s).all()) <= set(names)
    assert "acme-__assignor-__leader" in names
    assert "eu.catalog" in names  # the catalog table reads the declared topic, no changelog
    assert not any(name.endswith("catalog-changelog") for name in names)


def test_the_names_are_the_ones_faust_itself_uses(tmp_path: Path) -> None:
    s = settings(tmp_path, app_id="acme")
    app = create_app(s)
    names = {t.name for t in app_topics(app, Topics.from_settings(s))}
    assert {table.changelog_topic.get_topic_name() for table in app.tables.values()} <= names
    assignor = app._leader_assignor
    assert isinstance(assignor, LeaderAssignor)
    assert assignor._leader_topic_name in names


def test_a_table_added_to_the_app_is_created_too(tmp_path: Path) -> None:
    s = settings(tmp_path, app_id="acme", partitions=3)
    app = create_app(s)
    account_table(app, "invoices", 3, "a new table")
    topics = {t.name: t for t in app_topics(app, Topics.from_settings(s))}
    assert topics["acme-invoices-changelog"].partitions == 3
    assert topics["acme-invoices-changelog"].config["cleanup.policy"] == "compact"
