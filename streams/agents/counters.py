"""Counters agent: `counter.adjustments` → the `counters` table (`streams.counters`).

Bill runs read each account's counter history through `context.counters`. Counters go to
the worker's `context.stats` (`counter_adjustments_applied`, `_duplicate`,
`_superseded`, `_rejected`).
"""

from __future__ import annotations

import faust

from streams.context import MeterlineApp, WorkerContext
from streams.counters.intake import CounterIntake
from streams.counters.state import CounterState
from streams.tables import account_table
from streams.topics import COUNTER_ADJUSTMENTS, COUNTER_ADJUSTMENTS_REJECTED, faust_topic


def register(app: MeterlineApp, context: WorkerContext) -> None:
    if context.catalog is None:
        raise RuntimeError("the catalog agent must be registered before the counters agent")
    state = CounterState(
        account_table(
            app, "counters", context.topics.partitions, "Counter adjustments by <account>|<counter>"
        )
    )
    context.counters = state  # bill runs read counter histories
    rejected = faust_topic(app, context.topics, COUNTER_ADJUSTMENTS_REJECTED)
    intake = CounterIntake(state, rejected, context.catalog, context.stats)
    source = faust_topic(app, context.topics, COUNTER_ADJUSTMENTS)

    @app.agent(source, name="counters", concurrency=1)
    async def counters(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            # 1. table written or rejection delivered  2. write confirmed  3. faust acks
            await intake.handle(event.message)
            await intake.confirm()

    del counters
