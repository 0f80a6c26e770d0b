"""The live catalog: a global table over the compacted `catalog` topic.

`meterline catalog apply` publishes validated items; every worker reads all of them
(a GlobalTable) and rebuilds its `Catalog` snapshot when an item changes, no restart.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from faust.tables.globaltable import GlobalTable

from streams.schemas.catalog import Catalog

log = logging.getLogger(__name__)


class LiveCatalog:
    """The current Catalog of a worker; rebuilt lazily after the table changed."""

    def __init__(self) -> None:
        self.table: Any = None
        self._snapshot = Catalog()
        self._dirty = True
        self.version = 0

    def mark_changed(self, *_: Any) -> None:
        self._dirty = True

    def current(self) -> Catalog:
        if self._dirty and self.table is not None:
            self._dirty = False
            self._snapshot = self._rebuild()
            self.version += 1
        return self._snapshot

    def _rebuild(self) -> Catalog:
        entries = []
        for key, value in self.table.items():
            if value is None:
                continue
            try:
                entries.append((_text(key), orjson.loads(value)))
            except orjson.JSONDecodeError as exc:
                log.error("catalog item %s is not JSON (%s); ignored", key, exc)
        catalog = Catalog.from_entries_lenient(entries)
        for problem in catalog.problems:
            log.error("catalog: %s", problem)
        log.info(
            "catalog loaded: %d meters, %d aggregations, %d plans, %d plan mappings",
            len(catalog.catalog.meters),
            len(catalog.catalog.aggregations),
            len(catalog.catalog.plans),
            len(catalog.catalog.planMappings),
        )
        return catalog.catalog


class TopicGlobalTable(GlobalTable):
    """A GlobalTable over an existing topic.

    faust's assignor looks the changelog up by the default name
    (`<app>-<table>-changelog`) even when `changelog_topic` is given, and its
    rebalance then fails with a KeyError that hangs the group join.
    """

    def _changelog_topic_name(self) -> str:
        return str(self.changelog_topic.get_topic_name())


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)
