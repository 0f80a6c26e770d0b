"""The console's pages and routes in-process (worker and Kafka stood in): sessions, the
form token, and what a page says when it cannot be shown."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from connectors.console.session import COOKIE
from streams.settings import Settings
from tests.unit.edge_stubs import FakeProducer, StubWorker, edge_client

KEY = "console-key"
SETTINGS = Settings(org_id="ops", api_keys=(SecretStr(KEY),), topic_prefix="console.")


async def logged_in(client: httpx.AsyncClient) -> None:
    answer = await client.post("/console/login", data={"key": KEY, "next": "/console/usage"})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/usage"
    assert client.cookies.get(COOKIE)


async def test_a_console_page_without_a_session_sends_to_the_login_page_and_back() -> None:
    async with edge_client(SETTINGS, StubWorker()) as client:
        answer = await client.get("/console/bills?status=PENDING")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/login?next=/console/bills%3Fstatus%3DPENDING"


async def test_a_cookie_the_edge_did_not_sign_is_no_session() -> None:
    async with edge_client(SETTINGS, StubWorker()) as client:
        # the right key (base64), with a signature this edge did not make
        client.cookies.set(COOKIE, "Y29uc29sZS1rZXk=.forged", path="/console")
        answer = await client.get("/console/accounts")
        assert answer.status_code == 303 and "/console/login" in answer.headers["location"]


async def test_login_with_a_wrong_key_is_refused_on_the_page_and_keeps_no_session() -> None:
    async with edge_client(SETTINGS, StubWorker()) as client:
        answer = await client.post("/console/login", data={"key": "guess", "next": ""})
        assert answer.status_code == 401
        assert 'role="alert">invalid API key<' in answer.text
        assert COOKIE not in client.cookies


async def test_a_status_change_without_the_form_token_changes_nothing() -> None:
    producer = FakeProducer()
    async with edge_client(SETTINGS, StubWorker(), producer) as client:
        await logged_in(client)
        answer = await client.post(
            "/console/bills/bill_1/status", data={"status": "APPROVED", "csrf": "made-up"}
        )
        assert answer.status_code == 303 and "/console/login" in answer.headers["location"]
    assert producer.sent == []


async def test_the_versions_of_an_unknown_bill_are_a_404_naming_the_bill() -> None:
    async with edge_client(SETTINGS, StubWorker()) as client:
        answer = await client.get(
            "/organizations/ops/bills/bill_nope/versions",
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert answer.status_code == 404
    assert answer.json()["field"] == "bill_id" and "bill_nope" in answer.json()["message"]


async def test_a_usage_export_without_accounts_is_a_400_saying_what_to_give() -> None:
    async with edge_client(SETTINGS, StubWorker()) as client:
        await logged_in(client)
        answer = await client.get("/console/usage.csv?aggregation=api_calls")
    assert answer.status_code == 400
    assert answer.text == "give account(s) and aggregation(s)\n"


async def test_a_usage_page_whose_query_fails_says_why() -> None:
    async with edge_client(SETTINGS, StubWorker(down=True)) as client:
        await logged_in(client)
        answer = await client.get(
            "/console/usage?accounts=acme&aggregation=api_calls&start=2026-11-01&end=2026-11-02"
        )
    assert answer.status_code == 200
    assert 'role="alert">no worker answered' in answer.text
    assert answer.headers["content-security-policy"].startswith("default-src 'self'")
