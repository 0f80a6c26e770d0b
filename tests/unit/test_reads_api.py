"""The account read API against a stand-in worker: any account code reaches the worker as
it is, a code that cannot be one is a 400 naming the parameter, worker trouble a 503/502."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import pytest
from pydantic import SecretStr

from streams import pages
from streams.settings import Settings
from tests.unit.edge_stubs import StubWorker, edge_client

ORG = "org-1"
AUTH = {"Authorization": "Bearer key-1"}
API = f"/organizations/{ORG}"


@pytest.fixture
def worker() -> StubWorker:
    return StubWorker()


@pytest.fixture
async def client(worker: StubWorker) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(org_id=ORG, api_keys=(SecretStr("key-1"),), topic_prefix="unit.")
    async with edge_client(settings, worker) as client:
        yield client


@pytest.mark.parametrize("code", [".", "..", "a/b", "a|b", "x#y", "a?b=c", "Zürich", "é" * 200])
async def test_an_account_is_read_by_its_exact_code(
    client: httpx.AsyncClient, worker: StubWorker, code: str
) -> None:
    worker.accounts[code] = {"code": code}
    segment = quote(code, safe="").replace(".", "%2E")  # clients drop "." and ".." segments
    account = await client.get(f"{API}/accounts/{segment}", headers=AUTH)
    plans = await client.get(f"{API}/accountplans", params={"account": code}, headers=AUTH)
    assert (account.status_code, plans.status_code) == (200, 200), account.text + plans.text
    assert account.json() == {"code": code}
    assert worker.asked == [(pages.ACCOUNT, code), (pages.ACCOUNT_PLANS, code)]


async def test_an_unknown_account_is_a_404_naming_the_parameter(client: httpx.AsyncClient) -> None:
    account = await client.get(f"{API}/accounts/nobody", headers=AUTH)
    plans = await client.get(f"{API}/accountplans", params={"account": "nobody"}, headers=AUTH)
    assert (account.status_code, account.json()["field"]) == (404, "code")
    assert (plans.status_code, plans.json()["field"]) == (404, "account")


@pytest.mark.parametrize("account", ["", "a" * 201])
async def test_an_account_parameter_that_cannot_be_a_code_is_a_400_naming_it(
    client: httpx.AsyncClient, worker: StubWorker, account: str
) -> None:
    response = await client.get(f"{API}/accountplans", params={"account": account}, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["field"] == "account"
    assert worker.asked == []


async def test_when_no_worker_answers_a_read_is_a_503_with_retry_after(
    client: httpx.AsyncClient, worker: StubWorker
) -> None:
    worker.down = True
    response = await client.get(f"{API}/accounts/acme", headers=AUTH)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


async def test_a_worker_503_is_a_503_with_retry_after(
    client: httpx.AsyncClient, worker: StubWorker
) -> None:
    worker.status = 503
    response = await client.get(f"{API}/accounts/acme", headers=AUTH)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


async def test_a_worker_error_is_a_502(client: httpx.AsyncClient, worker: StubWorker) -> None:
    worker.status = 500
    response = await client.get(f"{API}/accounts/acme", headers=AUTH)
    assert response.status_code == 502


async def test_an_account_code_with_a_line_break_is_read_like_any_other(
    client: httpx.AsyncClient, worker: StubWorker
) -> None:
    worker.accounts["\n0"] = {"code": "\n0"}
    answer = await client.get(f"{API}/accounts/%0A0", headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"code": "\n0"}
