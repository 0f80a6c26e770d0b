"""`POST /organizations/{orgId}/balances` and `GET …/balances?account=`: a valid credit
grant is published to the account's partition once Kafka acknowledged it; a uid sent
again with the same grant is answered as recorded and not published again, with another
grant 409; every bad input is a 400 naming the field and nothing is published. The
worker records a grant once and refuses another under a used uid."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from connectors.http.balances import balances_router
from streams.balances.state import DUPLICATE, RECORDED, GrantRefused, record_grant, remaining
from streams.partitioning import partition_for
from streams.schemas.balances import BalanceGrant
from streams.settings import Settings
from tests.unit.edge_stubs import FakeProducer, StubWorker, edge_client
from tests.unit.test_bill_credits import Account, catalog
from tests.unit.test_ingest_api import with_edge

ORG = "org-1"
AUTH = {"Authorization": "Bearer key-1"}
BALANCES = f"/organizations/{ORG}/balances"


def body(**overrides: Any) -> dict[str, Any]:
    grant = {
        "uid": "g-1",
        "account": "acme",
        "currency": "USD",
        "amount": "25.00",
        "startDate": "2024-04-01",
        "reason": "outage credit",
    }
    grant.update(overrides)
    return {key: value for key, value in grant.items() if value is not None}


def recorded(**overrides: Any) -> dict[str, Any]:
    grant = BalanceGrant.model_validate({**body(**overrides), "receivedAt": 1})
    return {"grant": grant.model_dump(mode="json"), "consumed": "0", "remaining": "25.00"}


@pytest.fixture
def settings() -> Settings:
    return Settings(org_id=ORG, api_keys=(SecretStr("key-1"),), topic_prefix="unit.", partitions=4)


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def worker() -> StubWorker:
    return StubWorker()


@pytest.fixture
async def client(
    settings: Settings, worker: StubWorker, producer: FakeProducer
) -> AsyncIterator[httpx.AsyncClient]:
    async with edge_client(settings, worker, producer) as client:
        yield client


async def test_a_grant_is_published_to_the_accounts_partition_and_answered_as_recorded(
    client: httpx.AsyncClient, producer: FakeProducer, settings: Settings
) -> None:
    answer = await client.post(BALANCES, json=body(amount=25.5), headers=AUTH)

    assert answer.status_code == 200, answer.text
    assert answer.json()["amount"] == "25.5"
    [sent] = producer.sent
    assert sent.topic == "unit.balances"
    assert sent.key == b"acme"
    assert sent.partition == partition_for("acme", settings.partitions)
    published = orjson.loads(sent.value)
    assert (published["uid"], published["amount"], published["startDate"]) == (
        "g-1",
        "25.5",
        "2024-04-01T00:00:00Z",
    )


async def test_the_same_grant_again_is_answered_as_recorded_and_not_published_twice(
    client: httpx.AsyncClient, worker: StubWorker, producer: FakeProducer
) -> None:
    worker.balances["acme"] = [recorded()]

    answer = await client.post(BALANCES, json=body(), headers=AUTH)

    assert answer.status_code == 200
    assert answer.json()["receivedAt"] == 1
    assert producer.sent == []


async def test_another_grant_with_a_used_uid_is_a_409_naming_the_uid(
    client: httpx.AsyncClient, worker: StubWorker, producer: FakeProducer
) -> None:
    worker.balances["acme"] = [recorded()]

    answer = await client.post(BALANCES, json=body(amount="30.00"), headers=AUTH)

    assert answer.status_code == 409
    assert answer.json()["field"] == "uid"
    assert "a uid names one grant" in answer.json()["message"]
    assert producer.sent == []


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"amount": "10.005"}, "amount", "10.005 is not a whole number of USD minor units"),
        ({"currency": "JPY", "amount": "10.5"}, "amount", "not a whole number of JPY"),
        ({"amount": "-1"}, "amount", "greater than 0"),
        ({"reason": None}, "reason", "is required"),
        ({"expiryDate": "2024-03-01"}, "expiryDate", "must be after startDate"),
        ({"currency": "usd"}, "currency", "pattern"),
        ({"lineItemTypes": ["BALANCE_CONSUMED"]}, "lineItemTypes.0", "Input should be"),
        ({"bonus": 1}, "bonus", "unknown property"),
    ],
)
async def test_a_bad_grant_is_a_400_naming_the_field_and_nothing_is_published(
    client: httpx.AsyncClient,
    producer: FakeProducer,
    fields: dict[str, Any],
    field: str,
    message: str,
) -> None:
    answer = await client.post(BALANCES, json=body(**fields), headers=AUTH)

    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field
    assert message in answer.json()["message"]
    assert producer.sent == []


async def test_balances_are_read_from_the_worker_owning_the_account(
    client: httpx.AsyncClient, worker: StubWorker
) -> None:
    worker.balances["acme"] = [recorded()]

    answer = await client.get(BALANCES, params={"account": "acme"}, headers=AUTH)

    assert answer.status_code == 200
    assert answer.json() == {"data": [recorded()]}


async def test_balances_without_an_account_is_a_400_naming_it(client: httpx.AsyncClient) -> None:
    answer = await client.get(BALANCES, headers=AUTH)
    assert answer.status_code == 400
    assert answer.json()["field"] == "account"


async def test_a_grant_while_no_worker_answers_is_a_503_and_nothing_is_published(
    client: httpx.AsyncClient, worker: StubWorker, producer: FakeProducer
) -> None:
    worker.down = True
    answer = await client.post(BALANCES, json=body(), headers=AUTH)
    assert answer.status_code == 503
    assert producer.sent == []


async def test_an_unacknowledged_grant_is_503_and_says_a_retry_with_its_uid_is_safe(
    settings: Settings, worker: StubWorker
) -> None:
    app = with_edge(FastAPI(), settings, FakeProducer(refuse="Local: Message timed out"))
    app.include_router(balances_router(settings, 0.05, transport=worker.transport()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as c:
        answer = await c.post(BALANCES, json=body(), headers=AUTH)
    assert answer.status_code == 503
    assert "retrying with the same uid is safe" in answer.json()["message"]


# --- the worker's side ------------------------------------------------------------------


def grant(**overrides: Any) -> BalanceGrant:
    return BalanceGrant.model_validate({**body(**overrides), "receivedAt": 5})


def test_a_worker_records_a_grant_once_whenever_it_is_sent_again() -> None:
    first = record_grant(None, grant())
    again = record_grant(first.stored, grant(receivedAt=9))

    assert (first.outcome, again) == (RECORDED, (None, DUPLICATE))


def test_a_worker_refuses_another_grant_under_a_used_uid_naming_the_uid() -> None:
    first = record_grant(None, grant())
    with pytest.raises(GrantRefused, match=r"^uid: 'g-1' was already used for another grant"):
        record_grant(first.stored, grant(amount="26.00"))


def test_what_is_left_of_a_grant_is_its_amount_minus_what_the_latest_bills_consumed() -> None:
    credit = grant(account="cus_1", uid="g1", startDate="2024-01-01", amount="25.00")
    bills = Account(catalog(), {1: 100, 2: 100}, [credit]).months(2)

    [balance] = remaining([credit], bills)

    assert (balance.consumed, balance.remaining) == (Decimal("20.00"), Decimal("5.00"))
