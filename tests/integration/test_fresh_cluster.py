"""A new user's first run on a fresh cluster: every bill job is answered with bills.

The order of the report this reproduces: no topic of the deployment exists;
`meterline topics create`, `meterline catalog apply`, accounts subscribed through signed
Stripe webhooks and usage through the ingest API; then the worker starts and a bill job
for every account arrives within a second of it, for accounts on several partitions.
A worker that wedges on a changelog topic it created itself produces a bill or two and
then never another, so the job is repeated until every account has its bill.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from connectors.kafka.admin import create_topics
from streams.partitioning import partition_for
from tests.stack import EXAMPLE_CATALOG, Stack, now_s
from tests.support import eventually
from tests.unit import stripe_payloads as sp

pytestmark = pytest.mark.integration

PARTITIONS = 6
ACCOUNTS = [f"cus_fresh{n}" for n in range(7)]
DAY = 86_400
JOB_EVERY_S = 5.0
DROPPED = 3  # Stripe events a fetch returned while the worker's flow was stopped

# What a fetch that returned while faust's flow was stopped leaves behind (faust drops
# its records, counting on the seek to the committed offsets to read them again): the
# fetch position of `stripe.events[0]` past them, and nothing committed.
DROPPED_FETCH_HOOK = f"""
import os

from faust.types import TP

from streams.commits import InOrderConsumer

original = InOrderConsumer.perform_seek
topic = os.environ["METERLINE_TOPIC_PREFIX"] + "stripe.events"
dropped = []


async def perform_seek(self):
    if not dropped:
        dropped.append(True)
        self._thread.seek(TP(topic, 0), {DROPPED})
    await original(self)


InOrderConsumer.perform_seek = perform_seek
"""


@pytest.fixture
def fresh(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(kafka_bootstrap, tmp_path, partitions=PARTITIONS, provision=False)
    yield stack
    stack.stop()


def subscribe(stack: Stack, account: str) -> None:
    start = now_s() - 2 * DAY
    starter = sp.price(f"price_{account}", lookup_key="starter_monthly")
    for payload in (
        sp.event("customer.created", sp.customer(account), created=start, id=f"evt_c_{account}"),
        sp.event(
            "customer.subscription.created",
            sp.subscription(
                f"sub_{account}",
                api=sp.BASIL,
                customer=account,
                items=[sp.Item(f"si_{account}", starter)],
                created=start,
                period=(start, start + 30 * DAY),
            ),
            created=start + 1,
            id=f"evt_s_{account}",
        ),
    ):
        answer = stack.webhook(payload)
        assert answer.status_code == 200, answer.text


def ingest(stack: Stack, account: str, calls: int) -> None:
    measurement = {
        "uid": f"u-{account}",
        "meter": "api",
        "account": account,
        "ts": datetime.now(UTC).isoformat(),
        "measure": {"calls": calls},
        "who": {"user": "ann"},
    }
    with stack.client() as client:
        answer = client.post(f"{stack.api}/measurements", json={"measurements": [measurement]})
    assert answer.status_code == 200, answer.text


def bill_job(stack: Stack) -> None:
    with stack.client() as client:
        answer = client.post(f"{stack.api}/billjobs", json={"accountIds": ACCOUNTS})
    assert answer.status_code == 202, answer.text


def billed(stack: Stack) -> set[str]:
    with stack.client() as client:
        answer = client.get(f"{stack.api}/bills")
    if answer.status_code != 200:
        return set()
    return {bill["accountCode"] for bill in answer.json()["data"]}


def test_a_bill_job_sent_as_a_fresh_worker_starts_bills_every_account(fresh: Stack) -> None:
    assert len({partition_for(a, PARTITIONS) for a in ACCOUNTS}) >= 4, "several partitions"
    fresh.cli("topics", "create")
    fresh.cli("catalog", "apply", str(EXAMPLE_CATALOG))
    fresh.worker.start()  # with the edge, as `meterline dev` starts them
    fresh.start_http()
    for n, account in enumerate(ACCOUNTS):
        subscribe(fresh, account)
        ingest(fresh, account, 1_000 * (n + 1))
    bill_job(fresh)  # a second or two after the worker started
    next_job = time.monotonic() + JOB_EVERY_S

    def every_account_billed() -> bool:
        nonlocal next_job
        if time.monotonic() >= next_job:  # a wedged worker never answers a later job either
            bill_job(fresh)
            next_job = time.monotonic() + JOB_EVERY_S
        return billed(fresh) >= set(ACCOUNTS)

    try:
        eventually(every_account_billed, timeout=120, interval=0.5)
    except TimeoutError:
        missing = sorted(set(ACCOUNTS) - billed(fresh))
        raise AssertionError(
            f"no bill for {missing}; worker log:\n{fresh.worker.log_tail(60)}"
        ) from None


def test_a_worker_on_a_cluster_without_its_changelogs_names_and_creates_them_before_it_starts(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stack = Stack(kafka_bootstrap, tmp_path, partitions=PARTITIONS, provision=False)
    create_topics(kafka_bootstrap, stack.topics.all())  # the declared topics only
    stack.publish_catalog()
    app_id = stack.env["METERLINE_APP_ID"]
    try:
        stack.start_worker()
        log = stack.worker.log_path.read_text()
    finally:
        stack.stop()
    missing = log[log.index("topics were missing") :].splitlines()[0]
    for table in ("usage", "accounts", "accountplans", "bills", "billindex"):
        assert f"{app_id}-{table}-changelog" in missing
    assert "meterline topics create" in missing
    # faust found every topic in place: nothing it subscribes to is missing
    assert "Ignoring missing topic" not in log
    assert "not found in cluster metadata" not in log
    assert log.index("topics were missing") < log.index("[^Worker]: Starting")


def test_records_dropped_before_a_partition_s_first_commit_are_read_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A partition never committed has no committed offset to seek back to: reading it
    starts again at its beginning, not where the dropped fetch left its position."""
    stack = Stack(kafka_bootstrap, tmp_path, partitions=1)
    topic = stack.topics.stripe_events
    stack.hook_worker_start(DROPPED_FETCH_HOOK)
    customers = [f"cus_early{n}" for n in range(DROPPED)] + ["cus_late"]

    def publish(codes: list[str]) -> None:
        for code in codes:
            event = sp.event("customer.created", sp.customer(code), created=sp.T0, id=f"evt_{code}")
            stack.produce(topic, code, [orjson.dumps(event)])

    publish(customers[:DROPPED])  # before the worker joins
    stack.start_worker()
    try:
        publish(customers[DROPPED:])

        def accounts() -> int:
            answer = httpx.get(f"{stack.worker_url}/healthz", timeout=5).json()
            return int(answer["tables"]["accounts"])

        try:
            eventually(lambda: accounts() == len(customers), timeout=60)
        except TimeoutError:
            raise AssertionError(
                f"{accounts()} of {len(customers)} accounts; worker log:\n"
                f"{stack.worker.log_tail(60)}"
            ) from None
    finally:
        stack.stop()
