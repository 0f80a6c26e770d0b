"""The usage query API against a stand-in worker: bad input is a 400 naming the field,
any account code reaches the worker exactly as given, and worker trouble is a 503 or 502."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from streams import pages
from streams.settings import Settings
from streams.usage.book import usage_page
from streams.usage.engine import ReferenceEngine
from tests.unit.edge_stubs import StubWorker, edge_client
from tests.unit.test_usage_segments import CATALOG, call
from tests.unit.usage_engine_factories import NOW, PARTITIONS, message
from tests.unit.usage_engine_factories import T0 as ENGINE_T0

ORG = "org-1"
KEY = "key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUERY = f"/organizations/{ORG}/usage/query"
T0 = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
T0_MS = int(T0.timestamp()) * 1000
ODD_ACCOUNTS = [
    ".",
    "..",
    "a|b",
    "a/b",
    "a&aggregation=peak_storage",
    "x#fragment",
    "?start=0",
    "%2E",
    "a+b c",
    "tab\there",
    "nul\x00byte",
    "Zürich 東京 🙂",
    "é" * 200,
]


@pytest.fixture
def worker() -> StubWorker:
    return StubWorker()


@pytest.fixture
async def client(worker: StubWorker) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(org_id=ORG, api_keys=(SecretStr(KEY),), topic_prefix="unit.")
    async with edge_client(settings, worker) as client:
        yield client


def body(**overrides: Any) -> dict[str, Any]:
    return {
        "startDate": "2026-03-01T00:00:00Z",
        "endDate": "2026-03-02T00:00:00Z",
        "accountIds": ["acme"],
        "aggregations": ["api_calls"],
        **overrides,
    }


async def post(client: httpx.AsyncClient, **overrides: Any) -> httpx.Response:
    return await client.post(QUERY, json=body(**overrides), headers=AUTH)


def refused_field(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_query"
    field: str = response.json()["field"]
    return field


def usage_asked(worker: StubWorker) -> list[pages.UsageRequest]:
    return [ask for page, ask in worker.asked if page == pages.USAGE]


# --- bad input: 400 naming the field, no worker asked ----------------------------------


@pytest.mark.parametrize(
    ("field", "start", "end"),
    [
        # before year 1 in UTC
        ("startDate", "0001-01-01T00:00:00+09:22", "0001-01-02T00:00:00Z"),
        ("startDate", "1969-12-31T23:59:59Z", "1970-01-01T01:00:00Z"),
        # after year 9999 in UTC
        ("endDate", "9999-12-31T00:00:00Z", "9999-12-31T23:59:59-14:00"),
        ("endDate", "2026-03-01T00:00:00Z", "2026-03-02T00:00:00"),  # no timezone
    ],
)
async def test_a_date_outside_1970_to_9999_utc_or_without_timezone_is_a_400_naming_it(
    client: httpx.AsyncClient, worker: StubWorker, field: str, start: str, end: str
) -> None:
    response = await post(client, startDate=start, endDate=end)
    assert refused_field(response) == field
    assert worker.asked == []


async def test_an_end_before_the_start_is_a_400_naming_endDate(client: httpx.AsyncClient) -> None:
    response = await post(client, startDate="2026-03-02T00:00:00Z", endDate="2026-03-01T00:00:00Z")
    assert refused_field(response) == "endDate"
    assert "endDate must be after startDate" in response.json()["message"]


async def test_a_range_shorter_than_a_millisecond_is_a_400_naming_endDate_not_a_502(
    client: httpx.AsyncClient, worker: StubWorker
) -> None:
    # found by the edge fuzz test: usage is kept to the millisecond, so this range was
    # empty for the worker, which refused it, and the edge answered 502
    response = await post(
        client, startDate="2026-03-01T00:00:00Z", endDate="2026-03-01T00:00:00.000001+00:00"
    )
    assert refused_field(response) == "endDate"
    assert "by at least a millisecond" in response.json()["message"]
    assert worker.asked == []


async def test_usage_query_with_empty_account_id_is_a_400_naming_the_field(
    client: httpx.AsyncClient, worker: StubWorker
) -> None:
    response = await post(client, accountIds=["acme", ""])
    assert refused_field(response) == "accountIds.1"
    assert worker.asked == []


async def test_an_account_id_over_200_characters_is_a_400_naming_it(
    client: httpx.AsyncClient,
) -> None:
    assert refused_field(await post(client, accountIds=["a" * 201])) == "accountIds.0"


@pytest.mark.parametrize("code", ["api_calls,peak_storage", "a&b=c", "x#y", "", "api calls"])
async def test_an_aggregation_that_is_not_a_code_is_a_400_naming_it(
    client: httpx.AsyncClient, worker: StubWorker, code: str
) -> None:
    response = await post(client, aggregations=["api_calls", code])
    assert refused_field(response) == "aggregations.1"
    assert worker.asked == []


@pytest.mark.parametrize(
    ("content", "field"),
    [(b"", "body"), (b"[]", "body"), (b"{", "body"), (b'{"startDate": 1e999}', "startDate")],
)
async def test_a_body_that_is_not_a_query_object_is_a_400_naming_it(
    client: httpx.AsyncClient, content: bytes, field: str
) -> None:
    response = await client.post(QUERY, content=content, headers=AUTH)
    assert refused_field(response) == field


async def test_an_unknown_property_is_a_400_naming_it(client: httpx.AsyncClient) -> None:
    assert refused_field(await post(client, accountId="acme")) == "accountId"


async def test_an_unknown_aggregation_is_a_400_naming_aggregations(
    client: httpx.AsyncClient,
) -> None:
    response = await post(client, aggregations=["api_calls", "nope"])
    assert refused_field(response) == "aggregations"
    assert "unknown aggregation 'nope'" in response.text


# --- any account code reaches the worker as it is --------------------------------------


@pytest.mark.parametrize("account", ODD_ACCOUNTS)
async def test_an_account_code_reaches_the_worker_exactly_and_its_usage_comes_back(
    client: httpx.AsyncClient, worker: StubWorker, account: str
) -> None:
    worker.add_usage(account, "api_calls", T0_MS, 7)
    worker.add_usage("acme", "api_calls", T0_MS, 1000)
    response = await post(client, accountIds=[account], aggregations=["api_calls", "min_storage"])
    assert response.status_code == 200, response.text
    [asked] = usage_asked(worker)
    assert asked.account == account
    assert asked.aggregations == ("api_calls", "min_storage")
    assert response.json()["data"] == [
        {
            "aggregation": "api_calls",
            "function": "SUM",
            "value": "7",
            "count": 1,
            "accountId": account,
        }
    ]


async def test_a_repeated_account_or_aggregation_counts_once(
    client: httpx.AsyncClient, worker: StubWorker
) -> None:
    worker.add_usage("acme", "api_calls", T0_MS, 7)
    response = await post(
        client,
        accountIds=["acme", "acme"],
        aggregations=["api_calls", "api_calls"],
        groupByAccount=False,
    )
    assert response.status_code == 200, response.text
    assert [row["value"] for row in response.json()["data"]] == ["7"]
    assert response.json()["accounts"] == 1


@pytest.mark.parametrize("selection", [{}, {"accountIds": []}, {"accountIds": None}])
async def test_without_account_ids_the_listed_accounts_are_queried(
    client: httpx.AsyncClient, worker: StubWorker, selection: dict[str, Any]
) -> None:
    for account in (".", "a|b"):
        worker.add_usage(account, "api_calls", T0_MS, 2)
    everyone = {k: v for k, v in body().items() if k != "accountIds"}
    response = await client.post(QUERY, json={**everyone, **selection}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert sorted(ask.account for ask in usage_asked(worker)) == [".", "a|b"]
    assert {row["accountId"]: row["value"] for row in response.json()["data"]} == {
        ".": "2",
        "a|b": "2",
    }


async def test_dates_with_offsets_are_exact_epoch_milliseconds_for_the_worker(
    client: httpx.AsyncClient, worker: StubWorker
) -> None:
    response = await post(
        client, startDate="2026-03-01T09:22:00.001+09:22", endDate="2026-03-01T01:00:00.999Z"
    )
    assert response.status_code == 200, response.text
    [asked] = usage_asked(worker)
    assert (asked.start, asked.end) == (1772323200001, 1772326800999)
    assert response.json()["startDate"] == "2026-03-01T00:00:00.001000Z"


# --- worker trouble ---------------------------------------------------------------------


async def test_when_no_worker_answers_the_query_is_a_503_with_retry_after(
    client: httpx.AsyncClient, worker: StubWorker
) -> None:
    worker.down = True
    response = await post(client)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


async def test_a_worker_503_is_a_503_with_retry_after(
    client: httpx.AsyncClient, worker: StubWorker
) -> None:
    worker.status = 503
    response = await post(client)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize("status", [400, 404, 500])
async def test_a_worker_error_is_a_502(
    client: httpx.AsyncClient, worker: StubWorker, status: int
) -> None:
    worker.status = status
    response = await post(client)
    assert response.status_code == 502
    assert response.json()["error"] == "bad_gateway"


GOOD_ROW = {"aggregation": "api_calls", "bucket": 0, "state": {"n": 1, "s": "1"}}


@pytest.mark.parametrize(
    ("listing", "states"),
    [
        ({"accounts": ["acme"]}, {"rows": [{"aggregation": "api_calls"}], "functions": {}}),
        ({"accounts": ["acme"]}, {"rows": [GOOD_ROW], "functions": {"api_calls": "TOTAL"}}),
        ({"accounts": ["acme"]}, {"rows": [{**GOOD_ROW, "bucket": -1}], "functions": {}}),
        ({"accounts": ["acme"]}, {"rows": [{**GOOD_ROW, "state": {"n": 1, "s": "x"}}]}),
        ({"accounts": ["acme"]}, b"not json"),
        ({"accounts": [1]}, {"rows": [], "functions": {}}),
        ({"accounts": None}, {"rows": [], "functions": {}}),
    ],
)
async def test_a_worker_answer_the_edge_cannot_read_is_a_502(
    listing: dict[str, Any], states: dict[str, Any] | bytes
) -> None:
    def garbled(request: httpx.Request) -> httpx.Response:
        document = listing if request.url.path == pages.USAGE_ACCOUNTS else states
        if isinstance(document, bytes):
            return httpx.Response(200, content=document)
        return httpx.Response(200, json=document)

    settings = Settings(org_id=ORG, api_keys=(SecretStr(KEY),), topic_prefix="unit.")
    worker = StubWorker()
    worker.handle = garbled  # type: ignore[method-assign]
    everyone = {k: v for k, v in body().items() if k != "accountIds"}
    async with edge_client(settings, worker) as edge:
        response = await edge.post(QUERY, json=everyone, headers=AUTH)
    assert response.status_code == 502, response.text
    assert "cannot read" in response.json()["message"]


async def test_a_query_body_over_1_mib_is_a_413_naming_the_body(
    client: httpx.AsyncClient, worker: StubWorker
) -> None:
    response = await post(client, accountIds=["a" * 200] * 6000)
    assert response.status_code == 413
    assert response.json()["field"] == "body"
    assert worker.asked == []


# --- segments ---------------------------------------------------------------------------


async def test_a_query_grouped_by_segment_answers_a_row_per_segment_with_its_segment() -> None:
    engine = ReferenceEngine(PARTITIONS, CATALOG)
    engine.process(
        [
            message(
                0,
                call("a", 1, region="eu", provider="aws"),
                call("b", 10, region="eu", provider="gcp"),
                call("c", 100, region="apac"),
            )
        ],
        NOW,
    )

    def segmented(request: httpx.Request) -> httpx.Response:
        ask = pages.UsageRequest.parse(request.url.params.multi_items())
        return httpx.Response(200, json=usage_page(engine, CATALOG.aggregations, ask))

    settings = Settings(org_id=ORG, api_keys=(SecretStr(KEY),), topic_prefix="unit.")
    worker = StubWorker()
    worker.handle = segmented  # type: ignore[method-assign]
    day = {
        "startDate": iso_ms(ENGINE_T0),
        "endDate": iso_ms(ENGINE_T0 + 86_400_000),
        "accountIds": ["acme"],
    }
    ask = {**day, "aggregations": ["regional_calls", "calls"]}
    async with edge_client(settings, worker) as edge:
        grouped = await edge.post(QUERY, json={**ask, "groupBySegment": True}, headers=AUTH)
        total = await edge.post(QUERY, json=ask, headers=AUTH)
    assert grouped.status_code == 200, grouped.text
    rows = [(row["aggregation"], row["segment"], row["value"]) for row in grouped.json()["data"]]
    assert sorted(rows, key=str) == sorted(
        [
            ("calls", None, "111"),
            ("regional_calls", {"provider": "aws", "region": "eu"}, "1"),
            ("regional_calls", {"provider": "*", "region": "eu"}, "10"),
            ("regional_calls", {}, "100"),
        ],
        key=str,
    )
    assert [(row["aggregation"], row["value"]) for row in total.json()["data"]] == [
        ("calls", "111"),
        ("regional_calls", "111"),
    ]
    assert all("segment" not in row for row in total.json()["data"])


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
