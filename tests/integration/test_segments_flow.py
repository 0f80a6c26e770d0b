"""Meter filters and segmented aggregations end to end on the real broker: measurements
with a status and a region → the worker folds successful calls per region → the JPY
tokyo plan of the example catalog bills each region segment on its own line, and the
usage query answers per segment."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from tests.integration.test_billing_flow import bills_of, run_bills
from tests.integration.test_counters_flow import DAY, subscribe
from tests.stack import Stack, now_s

pytestmark = pytest.mark.integration


def call(account: str, uid: str, calls: int, status: str, region: str | None) -> bytes:
    measurement: dict[str, Any] = {
        "uid": uid,
        "meter": "api",
        "account": account,
        "ts": datetime.now(UTC).isoformat(),
        "measure": {"calls": calls},
        "what": {"status": status},
    }
    if region is not None:
        measurement["where"] = {"region": region}
    return orjson.dumps(measurement)


def segment_lines(stack: Stack, account: str) -> list[dict[str, Any]] | None:
    run_bills(stack, account)
    bills = bills_of(stack, account)
    if not bills:
        return None
    latest = max(bills, key=lambda b: b["version"])
    lines = [line for line in latest["lines"] if line.get("segment") is not None]
    quantities = sorted(Decimal(line["quantity"]) for line in lines)
    return lines if quantities == [Decimal(3), Decimal(20), Decimal(500)] else None


def test_successful_calls_are_billed_per_region_segment_and_queried_per_segment(
    stack: Stack,
) -> None:
    account = f"cus_regions_{now_s()}"
    subscribe(stack, account, "tokyo_monthly", now_s() - DAY)
    stack.produce(
        stack.topics.measurements,
        account,
        [
            call(account, "a", 500, "success", "ap-northeast"),
            call(account, "b", 7000, "error", "ap-northeast"),  # filtered out
            call(account, "c", 20, "success", "eu-west"),
            call(account, "d", 1, "success", "us-east"),  # the default segment
            call(account, "e", 2, "success", None),  # no region: the default segment
        ],
    )
    lines = stack.wait_for(lambda: segment_lines(stack, account), timeout=60)
    # tokyo: 0.3 JPY a call in Japan, 0.4 in Europe, 0.5 elsewhere; JPY has no minor unit
    found = [(line["id"], line["segment"], Decimal(line["subtotal"])) for line in lines]
    assert found == [
        (
            'USAGE:regional_calls:{"region":"ap-northeast"}',
            {"region": "ap-northeast"},
            Decimal(150),
        ),
        ('USAGE:regional_calls:{"region":"eu-west"}', {"region": "eu-west"}, Decimal(8)),
        ("USAGE:regional_calls:{}", {}, Decimal(2)),  # 3 x 0.5 = 1.5, half up
    ]

    with stack.client() as client:
        answer = client.post(
            f"{stack.api}/usage/query",
            json={
                "startDate": datetime.fromtimestamp(now_s() - DAY, UTC).isoformat(),
                "endDate": datetime.fromtimestamp(now_s() + DAY, UTC).isoformat(),
                "accountIds": [account],
                "aggregations": ["regional_calls", "api_calls"],
                "groupBySegment": True,
            },
        )
    assert answer.status_code == 200, answer.text
    rows = {
        (r["aggregation"], orjson.dumps(r["segment"])): r["value"] for r in answer.json()["data"]
    }
    assert rows == {
        ("api_calls", b"null"): "7523",
        ("regional_calls", b'{"region":"ap-northeast"}'): "500",
        ("regional_calls", b'{"region":"eu-west"}'): "20",
        ("regional_calls", b"{}"): "3",
    }
