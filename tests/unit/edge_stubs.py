"""The HTTP edge in-process with stand-ins for what it talks to: the worker and Kafka.

`StubWorker` stands in for the worker's read pages, as an httpx transport. It parses
every request with the worker's own parsers (`streams.pages`) and answers `/usage` with
the worker's own page function over an in-memory usage table, so an edge that builds a
request the worker would refuse, or reads its answer wrongly, fails here the way it
would against a real worker. It records what it was asked, and can be down (no answer:
a connection error) or answer a fixed status instead. `FakeProducer` is Kafka that
acknowledges (or refuses) every write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
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
from connectors.kafka.producer import DeliveryError
from connectors.metrics import Metrics
from streams import pages
from streams.schemas.catalog import Aggregation, Catalog
from streams.settings import Settings
from streams.topics import Topics
from streams.usage.book import usage_page
from streams.usage.state import UsageState
from streams.usage.store import (
    UsageRecord,
    merged_states,
    parse_record_key,
    record_key,
    slot_of,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "streams" / "catalog" / "example.yaml"


def example_aggregations() -> dict[str, Aggregation]:
    return dict(Catalog.from_documents(yaml.safe_load(EXAMPLE.read_text())).aggregations)


@dataclass
class RecordedUsage:
    """Usage records (`streams.usage.store`) answering the engine's `query`."""

    usage: dict[str, bytes]

    def query(
        self,
        account: str,
        aggregations: Iterable[str],
        start: int,
        end: int,
        bucket_ms: int | None = None,
    ) -> dict[tuple[str, int], UsageState]:
        size = bucket_ms
        bucket = None if size is None else (lambda hour: hour - hour % size)
        return merged_states(self.usage.get, account, aggregations, start, end, bucket)

    def query_segments(
        self,
        account: str,
        aggregations: Iterable[str],
        start: int,
        end: int,
        bucket_ms: int | None = None,
    ) -> dict[tuple[str, str, int], UsageState]:
        states = self.query(account, aggregations, start, end, bucket_ms)
        return {(code, "", bucket): state for (code, bucket), state in states.items()}


@dataclass
class StubWorker:
    aggregations: dict[str, Aggregation] = field(default_factory=example_aggregations)
    usage: dict[str, bytes] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    balances: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # /balances data
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
            document = usage_page(RecordedUsage(self.usage), self.aggregations, ask)
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
        if path == pages.BILL_PREVIEW:
            preview = pages.PreviewRequest.parse(query)
            self.asked.append((path, preview))
            if preview.account not in self.accounts:
                reason = f"account {preview.account!r} not found"
                return httpx.Response(404, json={"field": "account", "reason": reason})
            return httpx.Response(
                200, json={"data": self.accounts[preview.account].get("preview", [])}
            )
        if path == pages.BALANCES:
            account = pages.parse_account(query)
            self.asked.append((path, account))
            return httpx.Response(200, json={"data": self.balances.get(account, [])})
        return httpx.Response(404, json={"error": f"no page {path}"})


@dataclass(frozen=True)
class Sent:
    """A write Kafka acknowledged."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: dict[str, bytes] = field(default_factory=dict)
    partition: int | None = None

    @property
    def measurements(self) -> list[dict[str, Any]]:
        """The measurements of a batch envelope."""
        envelope: list[dict[str, Any]] = orjson.loads(self.value)["measurements"]
        return envelope


@dataclass(frozen=True)
class Delivered:
    """What a producer's delivery future resolves to (confluent-kafka's Message, in part)."""

    topic_: str
    partition_: int
    offset_: int

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_


@dataclass
class FakeProducer:
    """Kafka for the edge: acknowledges every write at once, refuses each (`refuse`: the
    delivery error) or never answers (`silent`). `sent`: the writes it acknowledged."""

    refuse: str | None = None
    silent: bool = False
    sent: list[Sent] = field(default_factory=list)

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Delivered]:
        future: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        if self.silent:
            return future
        if self.refuse is not None:
            future.set_exception(DeliveryError(self.refuse))
            return future
        self.sent.append(Sent(topic, value, key, dict(headers or []), partition))
        future.set_result(Delivered(topic, partition or 0, len(self.sent) - 1))
        return future

    @property
    def measurements(self) -> list[dict[str, Any]]:
        """Every measurement of every envelope it acknowledged."""
        return [m for sent in self.sent for m in sent.measurements]


def edge_app(
    settings: Settings, worker: StubWorker, producer: FakeProducer | None = None
) -> FastAPI:
    """The real edge app, its worker and Kafka replaced by the stand-ins."""
    app = create_app(settings, worker_transport=worker.transport())
    topics = Topics.from_settings(settings)
    app.state.edge = Edge(settings, topics, Metrics(), producer or FakeProducer())  # type: ignore[arg-type]
    return app


@asynccontextmanager
async def edge_client(
    settings: Settings, worker: StubWorker, producer: FakeProducer | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `edge_app`."""
    transport = httpx.ASGITransport(app=edge_app(settings, worker, producer))
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        yield client
