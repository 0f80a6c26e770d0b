"""Every topic a worker needs, read from the app's own declarations.

`streams.topics` declares the topics meterline reads and writes. faust adds one
changelog topic per table (`<app id>-<table>-changelog`, compacted, the table's
partition count and settings) and its leader-election topic, and would create them
itself while the worker starts. A topic created that late may be missing from the
producer's metadata when the first table change is written to it: aiokafka then asks
for that one topic only, the other topics drop out of its metadata, and a batch
already queued for one of them waits for a leader that never comes (the worker stops
billing for good). So all of them are created before any worker starts, by
`meterline topics create`, and by the worker itself for whatever is still missing.

The list is taken from an app built by the same factory the worker uses (nothing
connects until it starts), so a new table cannot be forgotten.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mode.utils.times import want_seconds

from streams.app import create_app
from streams.topics import ResolvedTopic, Topics, TopicSpec

if TYPE_CHECKING:
    import faust

    from streams.settings import Settings


def worker_topics(settings: Settings) -> list[ResolvedTopic]:
    """The declared topics and the worker's own (changelogs, leader election)."""
    return app_topics(create_app(settings), Topics.from_settings(settings))


def app_topics(app: faust.App, topics: Topics) -> list[ResolvedTopic]:
    declared = topics.all()
    out = list(declared)
    known = {topic.name for topic in declared}
    for table in app.tables.values():
        changelog = table.changelog_topic
        name = changelog.get_topic_name()
        if name in known:  # a global table over a declared topic (the catalog)
            continue
        known.add(name)
        spec = TopicSpec(
            base=name,
            key="table key",
            value=f"changelog of table {table.name}: {table.help}",
            config=_faust_topic_config(changelog),
        )
        out.append(ResolvedTopic(spec, name, changelog.partitions or app.conf.topic_partitions))
    if not app.conf.topic_disable_leader:
        out.append(_leader_topic(app))
    return out


def _faust_topic_config(topic: Any) -> dict[str, str]:
    """The settings faust declares a topic with (its `_topic_config` plus the extras)."""
    flags = [flag for flag, on in (("compact", topic.compacting), ("delete", topic.deleting)) if on]
    config = {"cleanup.policy": ",".join(flags)} if flags else {}
    if topic.retention:
        config["retention.ms"] = str(int(want_seconds(topic.retention) * 1000))
    config.update({key: str(value) for key, value in (topic.config or {}).items()})
    return config


def _leader_topic(app: faust.App) -> ResolvedTopic:
    # The name faust's LeaderAssignor elects a leader on (`_leader_topic_name`).
    name = f"{app.conf.id}-__assignor-__leader"
    spec = TopicSpec(
        base=name,
        key="-",
        value="faust leader election (timers that run on one worker only)",
        fixed_partitions=1,
    )
    return ResolvedTopic(spec, name, 1)
