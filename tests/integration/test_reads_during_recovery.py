"""Reads while a restarted worker recovers its tables, on a real broker.

A worker that has just joined its group replays every table from its changelog
(usage, accounts, the catalog) before its state is whole. Until then every read must
say so (503 with Retry-After), never answer from the half-built tables: no 404 for an
existing account, no 400 for a known aggregation, no partial usage total.

The module fills the usage log and the accounts table, restarts the worker and polls
the read API the whole time.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from connectors.kafka.measurements import MeasurementProducer
from tests.fixtures.stack import StackOptions
from tests.stack import Stack, now_s
from tests.unit import stripe_payloads as sp

pytestmark = pytest.mark.integration

PARTITIONS = 3
PROBES = [f"cus_probe{i:02d}" for i in range(9)]
FILLERS = [f"filler{i:03d}" for i in range(240)]
HOURS = 200  # account-hours per account: each one is a usage record in the changelog
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS)
QUERY = {
    "startDate": (START - timedelta(days=1)).isoformat(),
    "endDate": (START + timedelta(hours=HOURS + 24)).isoformat(),
    "accountIds": PROBES,
    "aggregations": ["api_calls", "active_users"],
    "groupByAccount": False,
}


STACK = StackOptions(partitions=PARTITIONS)


def measurement(account: str, hour: int, calls: int) -> dict[str, Any]:
    return {
        "uid": uuid.uuid4().hex,
        "meter": "api",
        "account": account,
        "ts": (START + timedelta(hours=hour, minutes=7)).isoformat(),
        "who": {"user": f"user{hour % 5}"},
        "measure": {"calls": calls, "bytes": 1000},
    }


def create_accounts(stack: Stack) -> None:
    for code in PROBES:
        event = sp.event(
            "customer.created",
            sp.customer(code, name=f"Probe {code}", email=f"{code}@probe.test"),
            created=now_s(),
            id=f"evt_{code}_created",
        )
        stack.produce(stack.topics.stripe_events, code, [orjson.dumps(event)])


def ingest_usage(stack: Stack) -> dict[str, Decimal]:
    """Usage of every account over HOURS hours; the probes' totals as the query answers them."""
    calls = Decimal(0)
    with MeasurementProducer(stack.bootstrap, stack.topics.measurements, PARTITIONS) as out:
        for hour in range(HOURS):
            for account in FILLERS:
                out.send(measurement(account, hour, 1))
            for n, account in enumerate(PROBES):
                out.send(measurement(account, hour, n + hour))
                calls += n + hour
    return {"api_calls": calls, "active_users": Decimal(5)}


@dataclass
class Reads:
    """Every answer of the read API during a worker restart, judged as it comes."""

    expected_usage: dict[str, Decimal]
    seen: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)

    def unavailable(self, what: str, answer: httpx.Response) -> bool:
        if answer.status_code == 503 and answer.headers.get("Retry-After"):
            self.seen[f"{what} 503"] += 1
            return True
        return False

    def account(self, code: str, answer: httpx.Response) -> bool:
        """True when the answer is the full account."""
        if self.unavailable("account", answer):
            return False
        if answer.status_code == 200 and answer.json().get("code") == code:
            self.seen["account 200"] += 1
            return True
        self.wrong.append(f"GET account {code}: {answer.status_code} {answer.text[:200]}")
        return False

    def usage(self, answer: httpx.Response) -> bool:
        """True when the answer is the probes' full usage."""
        if self.unavailable("usage", answer):
            return False
        if answer.status_code == 200:
            got = {row["aggregation"]: Decimal(row["value"]) for row in answer.json()["data"]}
            if got == self.expected_usage:
                self.seen["usage 200"] += 1
                return True
        self.wrong.append(f"usage query: {answer.status_code} {answer.text[:300]}")
        return False


def test_reads_during_recovery_answer_503_with_retry_after_or_the_full_state(
    stack: Stack,
) -> None:
    create_accounts(stack)
    expected = ingest_usage(stack)
    with stack.client() as client:

        def whole() -> bool:
            accounts = [client.get(f"{stack.api}/accounts/{code}") for code in PROBES]
            usage = client.post(f"{stack.api}/usage/query", json=QUERY)
            return all(a.status_code == 200 for a in accounts) and (
                usage.status_code == 200
                and {r["aggregation"]: Decimal(r["value"]) for r in usage.json()["data"]}
                == expected
            )

        stack.wait_for(whole, timeout=180)

        stack.worker.stop()
        stack.worker.start()
        reads = Reads(expected)
        health: Counter[str] = Counter()
        deadline = time.monotonic() + 180
        done = False
        turn = 0
        while not done and time.monotonic() < deadline:
            code = PROBES[turn % len(PROBES)]
            turn += 1
            account_ok = reads.account(code, client.get(f"{stack.api}/accounts/{code}"))
            usage_ok = reads.usage(client.post(f"{stack.api}/usage/query", json=QUERY))
            state = worker_health(stack)
            health[state] += 1
            done = account_ok and usage_ok and state.startswith("200")
            time.sleep(0.05)  # pace the polls: the worker shares two cores with this loop

    summary = f"answers: {dict(reads.seen)}, worker health: {dict(health)}"
    assert not reads.wrong, f"{len(reads.wrong)} wrong reads, first: {reads.wrong[:5]}; {summary}"
    assert done, f"the worker did not come back with the full state; {summary}"
    assert reads.seen["usage 503"] and reads.seen["account 503"], f"no recovery seen; {summary}"
    # /healthz said the worker was not ready (starting, rebalancing or recovering) while
    # it answered; how long each lasted depends on the machine
    assert any(state.startswith("503") for state in health), summary
    assert health["200 ready"], summary
    # (the usage log holds one delta per batch, so its own recovery may be over before
    # a poll sees it: which tables /healthz named is not asserted)


def worker_health(stack: Stack) -> str:
    """`<status> <state>` of the worker's /healthz (`down` while it does not answer)."""
    try:
        answer = httpx.get(f"{stack.worker_url}/healthz", timeout=2)
    except httpx.HTTPError:
        return "down"
    document = answer.json()
    if document.get("ready"):
        return f"{answer.status_code} ready"
    return f"{answer.status_code} {document.get('status')}"
