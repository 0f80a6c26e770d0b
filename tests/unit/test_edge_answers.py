"""The answers every route of the edge gives alike (`connectors.http.edge`): a
Content-Length that is not a number is a 400 naming the header, and a write Kafka does
not acknowledge is a 503 with Retry-After, whichever route wrote it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from pydantic import SecretStr

from streams.settings import Settings
from tests.unit.edge_stubs import FakeProducer, StubWorker, edge_client
from tests.unit.test_webhook_bridge import SECRET, customer_created, signature

ORG = "org-1"
AUTH = {"Authorization": "Bearer key-1"}
API = f"/organizations/{ORG}"
MEASUREMENT = {"uid": "u1", "meter": "api", "account": "acme", "ts": "2026-03-01T10:00:00Z"}


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer(refuse="Broker: Not enough in-sync replicas")


@pytest.fixture
async def client(producer: FakeProducer) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        org_id=ORG,
        api_keys=(SecretStr("key-1"),),
        topic_prefix="unit.",
        stripe_webhook_secrets=(SecretStr(SECRET),),
    )
    async with edge_client(settings, StubWorker(), producer) as client:
        yield client


def signed(body: bytes) -> dict[str, str]:
    return {"Stripe-Signature": signature(body, SECRET, int(time.time()))}


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (f"{API}/measurements", AUTH),
        (f"{API}/fileuploads/measurements", {**AUTH, "Content-Type": "application/jsonl"}),
        (f"{API}/usage/query", AUTH),
        ("/webhooks/stripe", {"Stripe-Signature": "t=1,v1=00"}),
    ],
)
async def test_a_content_length_that_is_not_a_number_is_a_400_naming_the_header(
    client: httpx.AsyncClient, producer: FakeProducer, path: str, headers: dict[str, str]
) -> None:
    response = await client.post(
        path, content=b"{}", headers={**headers, "Content-Length": "2 bytes"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "Content-Length"
    assert producer.sent == []


async def test_measurements_kafka_does_not_acknowledge_are_a_503_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    body = orjson.dumps({"measurements": [MEASUREMENT]})
    response = await client.post(f"{API}/measurements", content=body, headers=AUTH)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "Not enough in-sync replicas" in response.json()["message"]


async def test_a_stripe_event_kafka_does_not_acknowledge_is_a_503_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    body = customer_created()
    response = await client.post("/webhooks/stripe", content=body, headers=signed(body))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "Not enough in-sync replicas" in response.json()["message"]


async def test_a_bill_command_kafka_does_not_acknowledge_is_a_503_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    body = orjson.dumps({"accountIds": ["acme"]})
    response = await client.post(f"{API}/billjobs", content=body, headers=AUTH)
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert response.headers["retry-after"] == "1"
    assert "Not enough in-sync replicas" in response.json()["message"]
