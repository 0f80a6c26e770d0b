"""`POST /organizations/{orgId}/counteradjustments`: a valid adjustment is published to
the account's partition once Kafka acknowledged it; every bad input is a 400 naming the
field and the rule, and nothing is published."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from connectors.http.app import create_app
from connectors.http.counters import counters_router
from streams.partitioning import partition_for
from streams.settings import Settings
from tests.unit.edge_stubs import FakeProducer
from tests.unit.test_ingest_api import AUTH, ORG, PARTITIONS, settings_for, with_edge

ADJUSTMENTS = f"/organizations/{ORG}/counteradjustments"


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def settings() -> Settings:
    return settings_for()


@pytest.fixture
async def client(settings: Settings, producer: FakeProducer) -> AsyncIterator[httpx.AsyncClient]:
    app = with_edge(create_app(settings), settings, producer)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://edge"
    ) as client:
        yield client


def adjustment(**overrides: Any) -> dict[str, Any]:
    body = {
        "uid": "adj-1",
        "account": "acme",
        "counter": "seats",
        "date": "2024-04-16",
        "value": 12,
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


async def test_an_adjustment_is_published_to_the_accounts_partition_and_answered_as_recorded(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    response = await client.post(
        ADJUSTMENTS, json=adjustment(date="2024-04-16T09:30:00+02:00"), headers=AUTH
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["uid"], answer["date"], answer["value"]) == (
        "adj-1",
        "2024-04-16T07:30:00Z",
        12,
    )
    [sent] = producer.sent
    assert (sent.topic, sent.key) == ("unit.counter.adjustments", b"acme")
    assert sent.partition == partition_for("acme", PARTITIONS)
    record = orjson.loads(sent.value)
    assert (record["counter"], record["source"], record["receivedAt"]) == (
        "seats",
        "api",
        answer["receivedAt"],
    )


async def test_a_plain_date_starts_at_midnight_utc(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    response = await client.post(ADJUSTMENTS, json=adjustment(), headers=AUTH)
    assert response.json()["date"] == "2024-04-16T00:00:00Z"


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (adjustment(value=None), "value", "is required"),
        (adjustment(uid=None), "uid", "is required"),
        (adjustment(value=-3), "value", "Input should be greater than or equal to 0"),
        (adjustment(value="12"), "value", "Input should be a valid integer"),
        (adjustment(counter="no seats"), "counter", "String should match pattern"),
        (adjustment(account=""), "account", "String should have at least 1 character"),
        (adjustment(date="2024-02-30"), "date", "'2024-02-30' is not a calendar date"),
        (
            adjustment(date="2024-04-16T09:30:00"),
            "date",
            "expected an ISO 8601 date (2024-04-16) or date-time with timezone: must carry a "
            "timezone",
        ),
        (adjustment(seats=3), "seats", "unknown property"),
    ],
    ids=[
        "no-value",
        "no-uid",
        "negative",
        "string-value",
        "bad-counter-code",
        "empty-account",
        "no-such-day",
        "naive-time",
        "unknown-property",
    ],
)
async def test_a_bad_adjustment_is_400_naming_the_field_and_the_rule_and_nothing_is_published(
    client: httpx.AsyncClient,
    producer: FakeProducer,
    body: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    response = await client.post(ADJUSTMENTS, json=body, headers=AUTH)
    assert response.status_code == 400
    answer = response.json()
    assert (answer["error"], answer["field"]) == ("invalid_counter_adjustment", field)
    assert answer["message"].startswith(f"{field}: {reason}")
    assert producer.sent == []


@pytest.mark.parametrize("number", ["2.5", "12.0", "1e3"])
async def test_a_value_that_is_not_a_whole_number_as_written_is_refused_never_rounded(
    client: httpx.AsyncClient, producer: FakeProducer, number: str
) -> None:
    text = (
        '{"uid": "a", "account": "acme", "counter": "seats", "date": "2024-04-16", '
        f'"value": {number}}}'
    )
    response = await client.post(ADJUSTMENTS, content=text, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["message"] == "value: Input should be a valid integer"
    assert producer.sent == []


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"[1, 2]", "the body must be a JSON object"), (b"{nope", "the body is not valid JSON")],
)
async def test_a_body_that_is_not_an_object_is_400_naming_the_body(
    client: httpx.AsyncClient, content: bytes, message: str
) -> None:
    response = await client.post(ADJUSTMENTS, content=content, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["field"] == "body"
    assert response.json()["message"].startswith(message)


async def test_an_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(ADJUSTMENTS, content=b" " * 20_000, headers=AUTH)
    assert response.status_code == 413


async def test_an_adjustment_needs_the_api_key(client: httpx.AsyncClient) -> None:
    response = await client.post(ADJUSTMENTS, json=adjustment())
    assert response.status_code == 401


async def test_an_unacknowledged_adjustment_is_503_and_says_a_retry_with_its_uid_is_safe(
    settings: Settings,
) -> None:
    app = with_edge(FastAPI(), settings, FakeProducer(refuse="Local: Message timed out"))
    app.include_router(counters_router(settings, ack_timeout_s=0.05))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as c:
        response = await c.post(ADJUSTMENTS, json=adjustment(), headers=AUTH)
    assert response.status_code == 503
    assert "retrying with the same uid is safe" in response.json()["message"]
