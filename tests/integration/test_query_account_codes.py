"""Any account code, on a real broker: measurements ingested for accounts whose codes
are awkward in a URL come back from the usage query with exactly their totals, through
the worker (which the edge asks with the code as an encoded query parameter)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.stack import Stack

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
CALLS = {".": 3, "..": 4, "a|b": 5, "Zürich 東京 🙂": 6, "ü" * 200: 7, "a&aggregation=x#y": 8}


def measurement(account: str, calls: int) -> dict[str, Any]:
    return {
        "uid": uuid.uuid4().hex,
        "meter": "api",
        "account": account,
        "ts": NOW.isoformat(),
        "who": {"user": "ann"},
        "measure": {"calls": calls},
    }


def totals(stack: Stack, **selection: Any) -> dict[str, Decimal]:
    with stack.client() as client:
        answer = client.post(
            f"{stack.api}/usage/query",
            json={
                "startDate": (NOW - timedelta(hours=1)).isoformat(),
                "endDate": (NOW + timedelta(hours=1)).isoformat(),
                "aggregations": ["api_calls"],
                **selection,
            },
        )
    assert answer.status_code == 200, answer.text
    return {row["accountId"]: Decimal(row["value"]) for row in answer.json()["data"]}


def test_usage_of_accounts_with_awkward_codes_comes_back_exactly_through_the_worker(
    stack: Stack,
) -> None:
    # two measurements per account, so each total is a sum the worker computed
    batch = [measurement(code, calls) for code, calls in CALLS.items() for _ in range(2)]
    with stack.client() as client:
        ingest = client.post(f"{stack.api}/measurements", json={"measurements": batch})
    assert ingest.status_code == 200, ingest.text
    expected = {code: Decimal(2 * calls) for code, calls in CALLS.items()}

    stack.wait_for(lambda: totals(stack, accountIds=list(CALLS)) == expected, timeout=45)
    # listed by the worker when no accounts are given
    assert totals(stack) == expected
    # each alone: nothing of another account leaks in ("." is not "..", "a|b" is not "a")
    for code in CALLS:
        assert totals(stack, accountIds=[code]) == {code: expected[code]}
