"""Worker readiness: read pages answer 503 + Retry-After until the tables are recovered.

The predicate is judged on its own, then on a real worker app (`streams.app.create_app`,
not started: nothing connects) driven through faust's own rebalance hooks, and its pages
are called over HTTP on a local test server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from faust.tables.manager import TableManager
from faust.types import TP
from faust.web.drivers.aiohttp import Web

from streams.app import create_app
from streams.context import MeterlineApp
from streams.readiness import Behind, judge, readiness
from streams.settings import Settings

READ_PAGES = [
    "/accounts?account=acme",
    "/accountplans?account=acme",
    "/usage?account=acme&start=0&end=3600000&aggregation=api_calls",
    "/usage-accounts?start=0&end=3600000",
    "/bills?account=acme",
]


def test_a_worker_that_has_not_joined_its_group_is_starting() -> None:
    state = judge(rebalances=0, rebalancing=False, actives_ready=False, in_recovery=False)
    assert (state.ready, state.status) == (False, "starting")


def test_a_worker_is_ready_when_its_actives_are_recovered_and_no_rebalance_runs() -> None:
    state = judge(rebalances=1, rebalancing=False, actives_ready=True, in_recovery=False)
    assert state.ready
    assert state.document() == {"ready": True, "status": "ok", "recovering": []}


@pytest.mark.parametrize(
    ("rebalancing", "actives_ready", "in_recovery", "status"),
    [
        (True, False, False, "rebalancing"),  # joined, recovery not begun
        (True, False, True, "recovering"),
        (True, True, False, "rebalancing"),  # recovered, streams not resumed yet
        (False, False, False, "rebalancing"),  # recovery gave up for a newer generation
    ],
)
def test_a_worker_is_not_ready_while_a_rebalance_or_its_recovery_runs(
    rebalancing: bool, actives_ready: bool, in_recovery: bool, status: str
) -> None:
    state = judge(
        rebalances=2,
        rebalancing=rebalancing,
        actives_ready=actives_ready,
        in_recovery=in_recovery,
    )
    assert (state.ready, state.status) == (False, status)


def test_recovering_names_each_changelog_partition_still_behind_in_order() -> None:
    behind = [Behind("usage", 2, 40), Behind("accounts", 0, 3), Behind("usage", 0, 7)]
    state = judge(
        rebalances=1, rebalancing=True, actives_ready=False, in_recovery=True, behind=behind
    )
    assert state.document()["recovering"] == [
        {"table": "accounts", "partition": 0, "remaining": 3},
        {"table": "usage", "partition": 0, "remaining": 7},
        {"table": "usage", "partition": 2, "remaining": 40},
    ]


@pytest.fixture
def app(tmp_path: Path) -> MeterlineApp:
    settings = Settings(
        data_dir=tmp_path,
        partitions=3,
        topic_prefix=f"unit{uuid.uuid4().hex[:6]}.",
        app_id=f"unit-{uuid.uuid4().hex[:6]}",
    )
    return create_app(settings)


def table_manager(app: MeterlineApp) -> TableManager:
    """The app's table manager, as faust builds it (the interface has no `recovery`)."""
    assert isinstance(app.tables, TableManager)
    return app.tables


def recovered(app: MeterlineApp) -> None:
    """What faust does at the end of a rebalance whose recovery completed."""
    table_manager(app).on_actives_ready()
    app.on_rebalance_end()


def test_readiness_follows_faust_through_a_rebalance_and_its_recovery(app: MeterlineApp) -> None:
    assert readiness(app).status == "starting"
    app.on_rebalance_start()
    assert readiness(app).status == "rebalancing"

    recovery = table_manager(app).recovery
    usage = app.tables["usage"]
    behind, done = TP(usage.changelog_topic.get_topic_name(), 1), TP("other", 0)
    recovery.tp_to_table[behind] = usage
    recovery.active_highwaters.update({behind: 1_000, done: 5})
    recovery.active_offsets.update({behind: 400, done: 5})
    recovery.in_recovery = True
    assert readiness(app).document() == {
        "ready": False,
        "status": "recovering",
        "recovering": [{"table": "usage", "partition": 1, "remaining": 600}],
    }

    recovery.in_recovery = False
    recovered(app)
    assert readiness(app).ready
    app.on_rebalance_start()  # the next rebalance: the assignment may change again
    assert not readiness(app).ready


@pytest.fixture
async def web(app: MeterlineApp) -> AsyncIterator[TestClient[Any, Any]]:
    assert isinstance(app.web, Web)  # faust's aiohttp driver, the app's default
    async with TestClient(TestServer(app.web.web_app)) as client:
        yield client


@pytest.mark.parametrize("path", READ_PAGES)
async def test_every_read_page_answers_503_with_retry_after_until_the_worker_is_ready(
    web: TestClient[Any, Any], path: str
) -> None:
    answer = await web.get(path)
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "1"
    body = await answer.json()
    assert body["ready"] is False and body["status"] == "starting"
    assert "not ready" in body["error"]


async def test_healthz_is_503_and_not_ready_while_livez_stays_200(
    web: TestClient[Any, Any],
) -> None:
    health = await web.get("/healthz")
    assert health.status == 503
    assert (await health.json())["ready"] is False
    live = await web.get("/livez")
    assert live.status == 200
    assert await live.json() == {"live": True}


async def test_once_recovered_healthz_is_200_and_the_read_pages_answer(
    app: MeterlineApp, web: TestClient[Any, Any]
) -> None:
    app.on_rebalance_start()
    recovered(app)
    health = await web.get("/healthz")
    assert health.status == 200
    assert (await health.json())["ready"] is True
    listing = await web.get("/usage-accounts?start=0&end=3600000")
    assert listing.status == 200
    assert await listing.json() == {"accounts": []}
