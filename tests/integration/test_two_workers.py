"""Two worker processes in one group, on a real broker: each owns some partitions, and
a usage query without accounts (what a bill job and an operator's overview send) sees
the usage of every account, not only the accounts of the worker the edge asks."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from connectors.kafka.broker import free_port
from connectors.kafka.consumer import read_to_end
from connectors.kafka.measurements import MeasurementProducer
from streams.partitioning import partition_for
from tests.fixtures.stack import StackOptions
from tests.integration.test_billing_flow import subscribe
from tests.stack import Stack, now_s
from tests.support import Process, eventually, try_get_json

pytestmark = pytest.mark.integration

PARTITIONS = 4
ACCOUNTS = [f"two-{i:02d}" for i in range(16)]
NOW = datetime.now(UTC).replace(microsecond=0)

STACK = StackOptions(partitions=PARTITIONS, worker=False, http=False)


@pytest.fixture(scope="module")
def second(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A second worker of the same group: its own web port and data directory."""
    tmp: Path = tmp_path_factory.mktemp("second-worker")
    env = dict(stack.env, METERLINE_WORKER_WEB_PORT=str(free_port()), METERLINE_DATA_DIR=str(tmp))
    process = Process(["worker"], env, tmp / "worker.log")
    process.url = f"http://127.0.0.1:{env['METERLINE_WORKER_WEB_PORT']}"  # type: ignore[attr-defined]
    yield process
    process.stop()


def assigned(url: str, topic: str) -> set[int]:
    """The partitions of `topic` the worker at `url` owns, once it is ready."""
    document = try_get_json(f"{url}/healthz") or {}
    if not document.get("ready"):
        return set()
    return {
        int(tp.rsplit("[", 1)[1].rstrip("]"))
        for tp in document.get("assigned", ())
        if tp.rsplit("[", 1)[0] == topic
    }


def test_a_usage_query_without_accounts_sees_every_workers_accounts(
    stack: Stack, second: Process
) -> None:
    assert len({partition_for(a, PARTITIONS) for a in ACCOUNTS}) == PARTITIONS
    stack.start_worker()
    second.start()
    url = second.url  # type: ignore[attr-defined]

    def split() -> bool:
        topic = stack.topics.measurements
        mine, theirs = assigned(stack.worker_url, topic), assigned(url, topic)
        return bool(mine) and bool(theirs) and not mine & theirs

    eventually(split, timeout=120, interval=0.5)
    stack.start_http()

    expected: dict[str, Decimal] = {}
    with MeasurementProducer(stack.bootstrap, stack.topics.measurements, PARTITIONS) as out:
        for n, account in enumerate(ACCOUNTS):
            out.send(measurement(account, n + 1))
            expected[account] = Decimal(n + 1)

    def totals() -> dict[str, Decimal] | None:
        with stack.client() as client:
            answer = client.post(f"{stack.api}/usage/query", json=everyone())
        if answer.status_code != 200:
            return None
        return {row["accountId"]: Decimal(row["value"]) for row in answer.json()["data"]}

    eventually(lambda: totals() == expected, timeout=90, interval=0.5)
    # either worker lists all of them (the edge may ask either)
    start = int((NOW - timedelta(hours=2)).timestamp() * 1000)
    end = int((NOW + timedelta(hours=1)).timestamp() * 1000)
    for worker in (stack.worker_url, url):
        listing = httpx.get(f"{worker}/usage-accounts", params={"start": start, "end": end})
        assert listing.status_code == 200, listing.text
        assert listing.json()["accounts"] == sorted(ACCOUNTS)
    alone = httpx.get(
        f"{url}/usage-accounts", params={"start": start, "end": end, "local": "true"}
    ).json()["accounts"]
    assert 0 < len(alone) < len(ACCOUNTS)  # its own partitions only, when asked so


def test_a_bill_run_of_every_account_bills_each_account_once_whichever_worker_owns_it(
    stack: Stack, second: Process
) -> None:
    """One job for all accounts is one tick per partition: each worker runs the ticks of
    its own partitions, so every account gets exactly one bill, published once."""
    period = (now_s() - 86_400, now_s() + 29 * 86_400)
    for account in ACCOUNTS:
        subscribe(stack, account, "starter_monthly", period)

    def planned(account: str) -> bool:
        with stack.client() as client:
            answer = client.get(f"{stack.api}/accountplans", params={"account": account})
        return answer.status_code == 200 and bool(answer.json()["data"])

    eventually(lambda: all(planned(a) for a in ACCOUNTS), timeout=90, interval=0.5)
    with stack.client() as client:
        assert client.post(f"{stack.api}/billjobs", json={}).status_code == 202

    def published() -> dict[str, int] | None:
        counts: dict[str, int] = {}
        for message in read_to_end(stack.bootstrap, stack.topics.bills):
            account = orjson.loads(message.value() or b"{}")["accountCode"]
            counts[account] = counts.get(account, 0) + 1
        return counts if set(counts) >= set(ACCOUNTS) else None

    counts = eventually(published, timeout=90, interval=0.5)
    urls = (stack.worker_url, second.url)  # type: ignore[attr-defined]
    owners = [assigned(url, stack.topics.bill_commands) for url in urls]
    assert all(owners), f"both workers own bill.commands partitions: {owners}"
    assert counts == dict.fromkeys(ACCOUNTS, 1)


def test_the_listing_refuses_with_503_when_another_worker_does_not_answer(
    stack: Stack, second: Process
) -> None:
    second.stop(signal.SIGKILL)
    start = int((NOW - timedelta(hours=2)).timestamp() * 1000)
    end = int((NOW + timedelta(hours=1)).timestamp() * 1000)
    answer = httpx.get(f"{stack.worker_url}/usage-accounts", params={"start": start, "end": end})
    # before the group notices the kill, the survivor cannot list every partition: it says
    # so instead of answering with half of the accounts
    if answer.status_code == 503:
        assert answer.headers["Retry-After"] and "did not answer" in answer.json()["error"]
    else:  # the group already rebalanced: the survivor owns every partition
        assert answer.json()["accounts"] == sorted(ACCOUNTS)


def measurement(account: str, calls: int) -> dict[str, Any]:
    return {
        "uid": f"{account}-1",
        "meter": "api",
        "account": account,
        "ts": (NOW - timedelta(minutes=5)).isoformat(),
        "who": {"user": "ann"},
        "measure": {"calls": calls},
    }


def everyone() -> dict[str, Any]:
    return {
        "startDate": (NOW - timedelta(hours=2)).isoformat(),
        "endDate": (NOW + timedelta(hours=1)).isoformat(),
        "aggregations": ["api_calls"],
        "groupByAccount": True,
    }
