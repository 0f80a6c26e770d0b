"""The HTTP edge in-process with stand-ins for what it talks to: the worker and Kafka.

`StubWorker` stands in for the worker's read pages, as an httpx transport. It parses
every request with the worker's own parsers (`streams.pages`) and answers `/usage` with
the worker's own page function over an in-memory usage table, so an edge that builds a
request the worker would refuse, or reads its answer wrongly, fails here the way it
would against a real worker. It records what it was asked, and can be down (no answer:
a connection error) or answer a fixed status instead. `AckingProducer` is Kafka that
acknowledges every write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from fastapi import FastAPI

from connectors.http.app import create_app
from connectors.http.edge import Edge
from connectors.metrics import Metrics
from streams import pages
from streams.agents.usage import usage_page
from streams.schemas.catalog import Aggregation, Catalog
from streams.settings import Settings
from streams.topics import Topics
from streams.usage import UsageState
from streams.usage_store import UsageRecord, parse_record_key, record_key, slot_of

EXAMPLE = Path(__file__).resolve().parents[2] / "streams" / "catalog" / "example.yaml"


def example_aggregations() -> dict[str, Aggregation]:
    return dict(Catalog.from_documents(yaml.safe_load(EXAMPLE.read_text())).aggregations)


@dataclass
class StubWorker:
    aggregations: dict[str, Aggregation] = field(default_factory=example_aggregations)
    usage: dict[str, bytes] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    down: bool = False
    status: int | None = None  # answer this status to every request instead
    asked: list[tuple[str, Any]] = field(default_factory=list)
    refused: int = 0  # requests that found the worker down

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def add_usage(self, account: str, aggregation: str, ts_ms: int, amount: int) -> None:
        """One measurement's worth of SUM-like usage in the hour of `ts_ms`."""
        hour = ts_ms - ts_ms % 3_600_000
        key = record_key(account, slot_of(hour))
        stored = self.usage.get(key)
        record = UsageRecord() if stored is None else UsageRecord.from_bytes(stored)
        number = Decimal(amount)
        state = UsageState(count=1, sum=number, min=number, max=number, latest=(ts_ms, number))
        record.add(aggregation, hour, state)
        self.usage[key] = record.to_bytes()

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            self.refused += 1
            raise httpx.ConnectError("connection refused", request=request)
        if self.status is not None:
            return httpx.Response(self.status, json={"error": "stub"})
        query = request.url.params.multi_items()
        try:
            return self.page(request.url.path, query)
        except pages.BadPageRequest as error:
            return httpx.Response(400, json=error.document())

    def page(self, path: str, query: list[tuple[str, str]]) -> httpx.Response:
        if path == pages.USAGE:
            ask = pages.UsageRequest.parse(query)
            self.asked.append((path, ask))
            document = usage_page(self.usage.get, self.aggregations, ask)
            return httpx.Response(200, content=orjson.dumps(document))
        if path == pages.USAGE_ACCOUNTS:
            listing = pages.UsageAccountsRequest.parse(query)
            self.asked.append((path, listing))
            first, last = listing.start // 3_600_000, (listing.end - 1) // 3_600_000
            found = {
                account
                for account, slot in map(parse_record_key, self.usage)
                if first <= slot <= last
            }
            return httpx.Response(200, json={"accounts": sorted(found)})
        if path in (pages.ACCOUNT, pages.ACCOUNT_PLANS, pages.BILLS):
            account = pages.parse_account(query)
            self.asked.append((path, account))
            if account not in self.accounts:
                return httpx.Response(404, json={"error": f"account {account!r} not found"})
            if path == pages.ACCOUNT:
                return httpx.Response(200, json=self.accounts[account])
            return httpx.Response(200, json={"data": []} if path == pages.ACCOUNT_PLANS else [])
        return httpx.Response(404, json={"error": f"no page {path}"})


@dataclass(frozen=True)
class Delivered:
    """What a producer's delivery future resolves to (confluent-kafka's Message, in part)."""

    topic: str
    offset_: int

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.offset_


@dataclass
class AckingProducer:
    """Kafka that acknowledges every write at once, and remembers them."""

    sent: list[tuple[str, bytes]] = field(default_factory=list)

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Delivered]:
        self.sent.append((topic, value))
        future: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        future.set_result(Delivered(topic, len(self.sent) - 1))
        return future


def edge_app(
    settings: Settings, worker: StubWorker, producer: AckingProducer | None = None
) -> FastAPI:
    """The real edge app, its worker and Kafka replaced by the stand-ins."""
    app = create_app(settings, worker_transport=worker.transport())
    topics = Topics.from_settings(settings)
    app.state.edge = Edge(settings, topics, Metrics(), producer or AckingProducer())  # type: ignore[arg-type]
    return app


@asynccontextmanager
async def edge_client(
    settings: Settings, worker: StubWorker, producer: AckingProducer | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `edge_app`."""
    transport = httpx.ASGITransport(app=edge_app(settings, worker, producer))
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        yield client
