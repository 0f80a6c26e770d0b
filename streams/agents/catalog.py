"""Catalog agent: the `catalog` topic as a global table, read by every worker
(`streams.catalog.live`)."""

from __future__ import annotations

from typing import Any

from streams.catalog.live import LiveCatalog, TopicGlobalTable
from streams.context import MeterlineApp, WorkerContext
from streams.topics import CATALOG, faust_topic


def register(app: MeterlineApp, context: WorkerContext) -> None:
    live = LiveCatalog()
    topic = faust_topic(app, context.topics, CATALOG)
    live.table = app.tables.add(
        TopicGlobalTable(
            app,
            name=context.topics.catalog,
            changelog_topic=topic,
            key_type=bytes,
            value_type=bytes,
            partitions=1,
            on_changelog_event=_async(live.mark_changed),
            beacon=app.tables.beacon,
            is_global=True,
            # Apply each catalog change as it comes, also where this worker holds the
            # one partition as active: with faust's default buffer (1,000), changes
            # published after recovery never reach the table.
            recovery_buffer_size=1,
            standby_buffer_size=1,  # apply catalog changes as they come
        )
    )
    context.catalog = live


def _async(callback: Any) -> Any:
    async def on_event(event: Any) -> None:
        callback(event)

    return on_event
