"""The bill preview API against a stand-in worker: `at` and `account` are checked at the
edge (400 naming the parameter and the rule), the worker's 404 reason is passed on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest
from pydantic import SecretStr

from streams import pages
from streams.clock import epoch_ms
from streams.settings import Settings
from tests.unit.edge_stubs import StubWorker, edge_client

ORG = "org-1"
AUTH = {"Authorization": "Bearer key-1"}
PREVIEW = f"/organizations/{ORG}/bills/preview"


@pytest.fixture
def worker() -> StubWorker:
    return StubWorker(accounts={"acme": {"code": "acme", "preview": [{"id": "bill_1"}]}})


@pytest.fixture
async def client(worker: StubWorker) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(org_id=ORG, api_keys=(SecretStr("key-1"),), topic_prefix="unit.")
    async with edge_client(settings, worker) as client:
        yield client


@pytest.mark.parametrize(
    ("at", "sent"),
    [
        ("2026-11-20", "2026-11-20T00:00:00+00:00"),
        ("2026-11-20T10:30:00Z", "2026-11-20T10:30:00+00:00"),
        ("2026-11-20T12:30:00+02:00", "2026-11-20T10:30:00+00:00"),
    ],
)
async def test_a_preview_asks_the_worker_for_the_moment_given_as_a_date_or_date_time(
    client: httpx.AsyncClient, worker: StubWorker, at: str, sent: str
) -> None:
    answer = await client.get(PREVIEW, params={"account": "acme", "at": at}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"data": [{"id": "bill_1"}]}
    expected = pages.PreviewRequest("acme", epoch_ms(datetime.fromisoformat(sent)))
    assert worker.asked == [(pages.BILL_PREVIEW, expected)]


@pytest.mark.parametrize(
    ("params", "field", "rule"),
    [
        ({"at": "2026-11-20"}, "account", "required"),
        ({"account": "", "at": "2026-11-20"}, "account", "1 to 200 characters"),
        ({"account": "acme", "at": "yesterday"}, "at", "ISO 8601"),
        ({"account": "acme", "at": "2026-11-20T10:00:00"}, "at", "timezone"),
        ({"account": "acme", "at": "2026-13-01"}, "at", "ISO 8601"),
        ({"account": "acme", "at": "1969-12-31T23:00:00Z"}, "at", "between 1970"),
    ],
)
async def test_a_preview_with_a_bad_parameter_is_a_400_naming_it_and_the_rule(
    client: httpx.AsyncClient, worker: StubWorker, params: dict[str, str], field: str, rule: str
) -> None:
    answer = await client.get(PREVIEW, params=params, headers=AUTH)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field
    assert rule in answer.json()["message"]
    assert worker.asked == []


async def test_a_preview_of_an_unknown_account_is_a_404_naming_the_account(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get(PREVIEW, params={"account": "nobody"}, headers=AUTH)
    assert answer.status_code == 404
    assert answer.json()["field"] == "account"
    assert answer.json()["message"] == "account 'nobody' not found"


@pytest.mark.parametrize(
    ("pairs", "parameter"),
    [
        ([("account", "acme")], "at"),
        ([("account", "acme"), ("at", "1e3")], "at"),
        ([("account", "acme"), ("at", "-1")], "at"),
        ([("account", "acme"), ("at", "999999999999999")], "at"),
        ([("at", "0")], "account"),
    ],
)
def test_a_preview_request_the_worker_cannot_read_is_refused_naming_the_parameter(
    pairs: list[tuple[str, str]], parameter: str
) -> None:
    with pytest.raises(pages.BadPageRequest) as refused:
        pages.PreviewRequest.parse(pairs)
    assert refused.value.parameter == parameter
