"""Usage alerts on the real broker: catalog rules on an aggregation and on the bill total
each fire once per account and period when crossed, and not again on more usage,
redelivered measurements or a restarted worker."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
import yaml

from connectors.catalog_io import publish
from tests.integration.test_billing_flow import subscribe, usage_total
from tests.stack import EXAMPLE_CATALOG, Stack, now_s
from tests.support import records_of

pytestmark = pytest.mark.integration
DAY = 86_400
RULES = [
    # pro: 99.00 standing charge + 5.00 platform fee + 0.0015 per call
    {"code": "calls_10k", "measure": "AGGREGATION", "aggregation": "api_calls", "threshold": 10000},
    {"code": "spend_150", "measure": "BILL_TOTAL", "threshold": "150.00", "plans": ["pro"]},
]


def calls(stack: Stack, account: str, *batches: tuple[str, int]) -> None:
    """Measurements of (uid, calls), now."""
    stack.produce(
        stack.topics.measurements,
        account,
        [
            orjson.dumps(
                {
                    "uid": uid,
                    "meter": "api",
                    "account": account,
                    "ts": datetime.now(UTC).isoformat(),
                    "measure": {"calls": count},
                }
            )
            for uid, count in batches
        ],
    )


def alerts_of(stack: Stack, account: str) -> list[dict[str, Any]]:
    return records_of(stack.bootstrap, stack.topics.alerts, account)


def fired(stack: Stack, account: str, *rules: str) -> list[dict[str, Any]] | None:
    alerts = alerts_of(stack, account)
    return alerts if sorted({a["ruleCode"] for a in alerts}) == sorted(rules) else None


def test_absolute_rules_fire_once_per_period_and_not_again_on_redelivery_or_restart(
    stack: Stack,
) -> None:
    document = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    publish(stack.bootstrap, stack.topics.catalog, {**document, "alertRules": RULES})
    account, sentinel = f"cus_alert_{now_s()}", f"cus_sentinel_{now_s()}"
    start = now_s() - 2 * DAY
    for code in (account, sentinel):
        subscribe(stack, code, "pro_monthly", (start, start + 30 * DAY))

    calls(stack, account, ("a1", 6_000))
    stack.wait_for(lambda: usage_total(stack, account, 6_000))
    calls(stack, account, ("a2", 5_000))
    [calls_alert] = stack.wait_for(lambda: fired(stack, account, "calls_10k"), timeout=30)
    assert Decimal(calls_alert["value"]) == 11_000
    assert Decimal(calls_alert["threshold"]) == 10_000
    assert calls_alert["accountCode"] == account

    # 11,000 + 22,000 calls: 99.00 + 49.50 + 5.00 = 153.50 >= 150.00
    calls(stack, account, ("a3", 22_000))
    alerts = stack.wait_for(lambda: fired(stack, account, "calls_10k", "spend_150"), timeout=30)
    [spend] = [a for a in alerts if a["ruleCode"] == "spend_150"]
    assert (Decimal(spend["value"]), spend["currency"]) == (Decimal("153.50"), "USD")
    assert spend["periodStartDate"] == calls_alert["periodStartDate"]

    # The same measurements again (duplicates), more usage, and a restarted worker
    calls(stack, account, ("a1", 6_000), ("a2", 5_000), ("a3", 22_000), ("a4", 1_000))
    stack.wait_for(lambda: usage_total(stack, account, 34_000))
    stack.worker.stop()
    stack.start_worker()
    # The sentinel crosses after the restart: once its alert is out, the worker has
    # measured every account again (a restart measures all of them first).
    calls(stack, sentinel, ("s1", 12_000))
    stack.wait_for(lambda: fired(stack, sentinel, "calls_10k"), timeout=60)

    final = alerts_of(stack, account)
    assert sorted(a["ruleCode"] for a in final) == ["calls_10k", "spend_150"]
    assert len({a["id"] for a in final}) == 2
