"""With an engine that may fold off the event loop (the native one), the usage book folds
each batch on its own thread: the loop goes on (fetching, producing, answering) while a
batch is folded, and a usage query waits for that batch on the book's thread, never on
the loop's."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from streams.catalog.live import LiveCatalog
from streams.context import WorkerContext
from streams.pages import UsageRequest
from streams.settings import Settings
from streams.sources import Source
from streams.topics import Topics
from streams.usage.book import UsageBook
from streams.usage.engine import Processed
from streams.usage.metering import Message


class SlowEngine:
    """An engine whose batches take until `release` is set."""

    def __init__(self, parallel: bool) -> None:
        self.parallel = parallel
        self.release = threading.Event()
        self.calls: list[tuple[str, str]] = []

    def set_catalog(self, catalog: Any) -> None:
        pass

    def process(self, messages: list[Message], now_ms: int) -> Processed:
        assert self.release.wait(5)
        self.calls.append(("process", threading.current_thread().name))
        return Processed()

    def query(self, *args: Any) -> dict[Any, Any]:
        self.calls.append(("query", threading.current_thread().name))
        return {}


def book(engine: SlowEngine) -> UsageBook:
    settings = Settings()
    context = WorkerContext(settings=settings, topics=Topics.from_settings(settings))
    context.catalog = LiveCatalog()
    return UsageBook(engine, context)  # type: ignore[arg-type]


BATCH = [Message(b"acme", b"{}", Source("measurements", 0, 0))]
ASK = UsageRequest(account="acme", start=0, end=3_600_000, aggregations=("api_calls",))


async def test_a_batch_folds_off_the_loop_and_a_query_meanwhile_waits_for_it_off_the_loop() -> None:
    engine = SlowEngine(parallel=True)
    usage = book(engine)
    folding = asyncio.ensure_future(usage.process_off_loop(BATCH, 0))
    asking = asyncio.ensure_future(usage.page_off_loop({}, ASK))
    ticks = 0
    for _ in range(20):  # the loop runs while the batch is folded
        await asyncio.sleep(0.005)
        ticks += 1
    assert ticks == 20 and not folding.done() and not asking.done()
    engine.release.set()
    await asyncio.wait_for(asyncio.gather(folding, asking), 5)
    assert [call for call, _ in engine.calls] == ["process", "query"]  # the batch first
    assert all(name.startswith("usage-engine") for _, name in engine.calls)


async def test_an_engine_that_holds_the_gil_folds_on_the_loop() -> None:
    engine = SlowEngine(parallel=False)
    engine.release.set()
    usage = book(engine)
    await usage.process_off_loop(BATCH, 0)
    await usage.page_off_loop({}, ASK)
    assert engine.calls == [
        ("process", threading.current_thread().name),
        ("query", threading.current_thread().name),
    ]
