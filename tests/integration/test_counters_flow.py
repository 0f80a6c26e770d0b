"""Counter adjustments end to end on the real broker: the API → `counter.adjustments` →
the counters agent → bill lines (running total, prorated debit and credit); seats from a
Stripe subscription item's quantity; bad adjustments answered or dead-lettered with the
field and the rule."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer

from streams.topics import COUNTER_ADJUSTMENTS_REJECTED
from tests.integration.test_billing_flow import bills_of, run_bills
from tests.stack import Stack, now_s
from tests.support import value_of
from tests.unit.stripe_payloads import BASIL, Item, customer, event, price, subscription

pytestmark = pytest.mark.integration
DAY = 86_400


def subscribe(stack: Stack, account: str, lookup_key: str, start: int, quantity: int = 1) -> None:
    sub = subscription(
        f"sub_{account}",
        api=BASIL,
        customer=account,
        items=[Item(f"si_{account}", price(f"price_{lookup_key}", lookup_key=lookup_key))],
        created=start,
        period=(start, start + 30 * DAY),
    )
    sub["items"]["data"][0]["quantity"] = quantity
    events = [
        event("customer.created", customer(account), created=start, id=f"evt_c_{account}"),
        event("customer.subscription.created", sub, created=start + 1, id=f"evt_s_{account}"),
    ]
    stack.produce(stack.topics.stripe_events, account, [orjson.dumps(e) for e in events])


def adjust(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    with stack.client() as client:
        answer = client.post(f"{stack.api}/counteradjustments", json=body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


def counter_lines_once(
    stack: Stack, account: str, wanted: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]] | None:
    """Run bills; the counter lines of the latest bill once they are `wanted` (the bill
    run and the adjustments travel on different topics: a run may come first)."""
    run_bills(stack, account)
    bills = bills_of(stack, account)
    if not bills:
        return None
    latest = max(bills, key=lambda b: b["version"])
    lines = [line for line in latest["lines"] if line["lineItemType"].startswith("COUNTER_")]
    return lines if wanted(lines) else None


def count_of(n: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda lines: len(lines) == n


def amounts(lines: list[dict[str, Any]]) -> list[tuple[str, Decimal]]:
    return [(line["lineItemType"], Decimal(line["subtotal"])) for line in lines]


def test_seat_adjustments_through_the_api_become_prorated_bill_lines(stack: Stack) -> None:
    account = f"cus_seats_{now_s()}"
    start = now_s() - 2 * DAY
    subscribe(stack, account, "starter_monthly", start)
    ten = {"uid": "seats-1", "account": account, "counter": "seats", "value": 10}
    adjust(stack, {**ten, "date": iso(start)})
    adjust(stack, {**ten, "date": iso(start)})  # a client's retry: applied once
    adjust(stack, {**ten, "uid": "seats-2", "value": 15, "date": iso(start + DAY)})

    lines = stack.wait_for(lambda: counter_lines_once(stack, account, count_of(2)), timeout=60)
    # starter: seats at 4.00; 10 from the start: 40.00; 5 more for 29 of 30 days:
    # 5 x 4.00 x 29/30 = 19.333... -> 19.33
    assert amounts(lines) == [
        ("COUNTER_RUNNING_TOTAL_CHARGE", Decimal("40.00")),
        ("COUNTER_ADJUSTMENT_DEBIT", Decimal("19.33")),
    ]

    adjust(stack, {**ten, "uid": "seats-3", "value": 6, "date": iso(start + 2 * DAY)})
    lines = stack.wait_for(lambda: counter_lines_once(stack, account, count_of(3)), timeout=60)
    # 9 fewer for 28 of 30 days: -9 x 4.00 x 28/30 = -33.60
    assert amounts(lines)[2] == ("COUNTER_ADJUSTMENT_CREDIT", Decimal("-33.60"))
    latest = max(bills_of(stack, account), key=lambda b: b["version"])
    # 10.00 standing charge + 25.00 minimum spend (no usage) + 40.00 + 19.33 - 33.60
    assert Decimal(latest["total"]) == Decimal("60.73")


def test_a_seat_subscriptions_stripe_quantity_is_billed_by_its_plans_counter(
    stack: Stack,
) -> None:
    account = f"cus_tokyo_{now_s()}"
    subscribe(stack, account, "tokyo_monthly", now_s() - DAY, quantity=3)
    lines = stack.wait_for(
        lambda: counter_lines_once(stack, account, lambda found: found[0]["quantity"] == "3"),
        timeout=60,
    )
    # tokyo: 500 JPY a seat, 3 seats from the subscription's start
    assert amounts(lines) == [("COUNTER_RUNNING_TOTAL_CHARGE", Decimal(1500))]
    assert Decimal(lines[0]["quantity"]) == 3


def test_bad_adjustments_are_a_400_or_dead_lettered_with_the_field_and_the_rule(
    stack: Stack,
) -> None:
    account = f"cus_bad_{now_s()}"
    with stack.client() as client:
        refused = client.post(
            f"{stack.api}/counteradjustments",
            json={"uid": "x", "account": account, "counter": "seats", "date": "2024-04-16"},
        )
    assert refused.status_code == 400
    assert (refused.json()["field"], refused.json()["message"]) == ("value", "value: is required")

    adjust(
        stack,
        {"uid": "x", "account": account, "counter": "licences", "date": "2024-04-16", "value": 1},
    )
    reasons = stack.wait_for(lambda: rejected_for(stack, account), timeout=30)
    assert reasons == ["counter: unknown counter 'licences' (not in the catalog)"]


def rejected_for(stack: Stack, account: str) -> list[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": f"r-{now_s()}-{id(stack)}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([stack.topics.name(COUNTER_ADJUSTMENTS_REJECTED)])
    reasons = []
    try:
        for _ in range(20):
            message = consumer.poll(0.3)
            if message is not None and not message.error():
                record = orjson.loads(value_of(message))
                if record["adjustment"]["account"] == account:
                    reasons.append(record["reason"])
    finally:
        consumer.close()
    return reasons
