"""The HTTP edge reaches the workers listed in METERLINE_WORKER_URL: one that does not
take the connection is skipped for the next (`connectors.http.worker`)."""

from __future__ import annotations

import httpx
import pytest

from connectors.console.api import process_health
from connectors.http.edge import ApiError
from connectors.http.worker import Worker
from connectors.kafka.broker import free_port
from streams.settings import load_settings

DOWN, UP = "http://127.0.0.1:1", "http://127.0.0.1:2"


def transport(alive: set[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        if base not in alive:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"worker": base})

    return httpx.MockTransport(handle)


async def test_a_read_goes_to_the_next_worker_when_the_first_refuses_the_connection() -> None:
    worker = Worker(f"{DOWN}, {UP}/", 5.0, transport({UP}))
    async with worker.client() as client:
        answer = await worker.get(client, "/accounts", [("account", "a")], subject="account 'a'")
    assert answer.json() == {"worker": UP}


async def test_when_no_listed_worker_answers_the_read_is_503_naming_each_of_them() -> None:
    worker = Worker(f"{DOWN},{UP}", 5.0, transport(set()))
    async with worker.client() as client:
        with pytest.raises(ApiError) as refused:
            await worker.get(client, "/accounts", [("account", "a")], subject="account 'a'")
    assert refused.value.status == 503
    message = refused.value.body["message"]
    assert DOWN in message and UP in message


async def test_the_consoles_health_panel_lists_every_worker_the_edge_asks() -> None:
    settings = load_settings(
        worker_url=f"http://127.0.0.1:{free_port()},http://127.0.0.1:{free_port()}",
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
    )
    processes = await process_health(settings)
    assert [p["name"] for p in processes] == ["http edge", "worker 1", "worker 2", "stripe sink"]
    assert not processes[1]["ok"] and not processes[2]["ok"]  # no worker runs there
