"""Commitments, credit grants and percent alerts on the real broker: a commitment from the
catalog and a grant through the API pay the bill (COMMITMENT_FEE, COMMITMENT_CONSUMED,
BALANCE_CONSUMED lines); the grant is recorded once by its uid and another grant under
it is refused (409 at the edge, dead-lettered on the topic); an absolute and a percent
alert rule each fire once, and not again when the measurements are redelivered."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
import yaml

from connectors.catalog_io import publish
from streams.topics import BALANCES_REJECTED
from tests.integration.test_alerts_flow import alerts_of, calls, fired
from tests.integration.test_billing_flow import bills_of, run_bills, subscribe, usage_total
from tests.stack import EXAMPLE_CATALOG, Stack, now_s
from tests.support import records_of

pytestmark = pytest.mark.integration
DAY = 86_400
RULES = [
    {"code": "calls_10k", "measure": "AGGREGATION", "aggregation": "api_calls", "threshold": 10000},
    {"code": "commit_half", "measure": "COMMITMENT_CONSUMED_PERCENT", "threshold": "50"},
]


def iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


def grant(stack: Stack, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    with stack.client() as client:
        answer = client.post(f"{stack.api}/balances", json=body)
    return answer.status_code, answer.json()


def balances(stack: Stack, account: str) -> list[dict[str, Any]]:
    with stack.client() as client:
        answer = client.get(f"{stack.api}/balances", params={"account": account})
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


def credit_lines(stack: Stack, account: str, consumed: str) -> list[tuple[str, Decimal]] | None:
    """The latest bill's lines once the grant consumed `consumed` (the run and the usage
    travel on different topics: a run may come first)."""
    run_bills(stack, account)
    bills = bills_of(stack, account)
    if not bills:
        return None
    latest = max(bills, key=lambda bill: bill["version"])
    lines = [(line["lineItemType"], Decimal(line["subtotal"])) for line in latest["lines"]]
    return lines if ("BALANCE_CONSUMED", -Decimal(consumed)) in lines else None


def test_a_commitment_and_a_grant_pay_the_bill_and_alerts_fire_once(stack: Stack) -> None:
    account = f"cus_credit_{now_s()}"
    start = now_s() - 2 * DAY
    commitment = {
        "code": f"c_{account}",
        "account": account,
        "plan": "pro",
        "amount": "40.00",
        "startDate": iso(start),
        "endDate": iso(start + 365 * DAY),
    }
    document = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    publish(
        stack.bootstrap,
        stack.topics.catalog,
        {**document, "commitments": [commitment], "alertRules": RULES},
    )
    subscribe(stack, account, "pro_monthly", (start, start + 30 * DAY))
    body = {
        "uid": "credit-1",
        "account": account,
        "currency": "USD",
        "amount": "30.00",
        "startDate": iso(start),
        "reason": "onboarding",
    }
    status, first = grant(stack, body)
    assert status == 200
    stack.wait_for(lambda: balances(stack, account) or None)
    status, again = grant(stack, body)  # a client's retry: answered as first recorded
    assert (status, again["receivedAt"]) == (200, first["receivedAt"])
    status, refused = grant(stack, {**body, "amount": "31.00"})
    assert (status, refused["field"]) == (409, "uid")
    # another grant under the uid straight onto the topic: the worker refuses it
    stack.produce(
        stack.topics.balances,
        account,
        [orjson.dumps({**body, "amount": "99.00", "receivedAt": 1})],
    )

    calls(stack, account, ("c1", 6_000), ("c2", 5_000))
    stack.wait_for(lambda: usage_total(stack, account, 11_000))
    lines = stack.wait_for(lambda: credit_lines(stack, account, "30.00"), timeout=60)
    # 99.00 standing charge; 11,000 calls: 16.50 + 5.00 platform fee = 21.50, all paid by
    # the 40.00 commitment charged up front; the grant pays 30.00 of what is left
    assert lines == [
        ("STANDING_CHARGE", Decimal("99.00")),
        ("USAGE", Decimal("21.50")),
        ("USAGE", Decimal("0.00")),
        ("USAGE", Decimal("0.00")),
        ("COMMITMENT_FEE", Decimal("40.00")),
        ("COMMITMENT_CONSUMED", Decimal("-21.50")),
        ("BALANCE_CONSUMED", Decimal("-30.00")),
    ]
    latest = max(bills_of(stack, account), key=lambda bill: bill["version"])
    assert Decimal(latest["total"]) == Decimal("109.00")
    [balance] = balances(stack, account)
    assert (balance["grant"]["amount"], balance["consumed"], balance["remaining"]) == (
        "30.00",
        "30.00",
        "0.00",
    )
    [dead] = records_of(stack.bootstrap, stack.topics.name(BALANCES_REJECTED), account)
    assert dead["reason"].startswith("uid: 'credit-1' was already used for another grant")

    # 21.50 of 40.00 is 53.75 % of the commitment; 11,000 calls
    alerts = stack.wait_for(lambda: fired(stack, account, "calls_10k", "commit_half"), timeout=30)
    [percent] = [alert for alert in alerts if alert["ruleCode"] == "commit_half"]
    assert Decimal(percent["value"]) == Decimal("53.75")
    assert Decimal(percent["threshold"]) == 50

    # The same measurements again: usage, bill and alerts stay as they are
    calls(stack, account, ("c1", 6_000), ("c2", 5_000), ("c3", 1))
    stack.wait_for(lambda: usage_total(stack, account, 11_001))
    stack.wait_for(lambda: credit_lines(stack, account, "30.00"), timeout=60)
    final = alerts_of(stack, account)
    assert sorted(alert["ruleCode"] for alert in final) == ["calls_10k", "commit_half"]
    assert len({alert["id"] for alert in final}) == 2
