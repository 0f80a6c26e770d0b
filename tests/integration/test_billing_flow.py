"""Usage → bill run → `bills` on the real broker: versions, lifecycle, locked periods."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from tests.stack import Stack, now_s
from tests.support import value_of
from tests.unit.stripe_payloads import BASIL, Item, customer, event, price, subscription

pytestmark = pytest.mark.integration
DAY = 86_400


def subscribe(stack: Stack, account: str, lookup_key: str, period: tuple[int, int]) -> None:
    created = period[0]
    events = [
        event("customer.created", customer(account), created=created, id=f"evt_c_{account}"),
        event(
            "customer.subscription.created",
            subscription(
                f"sub_{account}",
                api=BASIL,
                customer=account,
                items=[Item(f"si_{account}", price(f"price_{lookup_key}", lookup_key=lookup_key))],
                created=created,
                period=period,
            ),
            created=created + 1,
            id=f"evt_s_{account}",
        ),
    ]
    stack.produce(stack.topics.stripe_events, account, [orjson.dumps(e) for e in events])


def usage(stack: Stack, account: str, uid: str, calls: int, user: str) -> None:
    measurement = {
        "uid": uid,
        "meter": "api",
        "account": account,
        "ts": datetime.now(UTC).isoformat(),
        "measure": {"calls": calls},
        "who": {"user": user},
    }
    stack.produce(stack.topics.measurements, account, [orjson.dumps(measurement)])


def bills_of(stack: Stack, account: str) -> list[dict[str, Any]]:
    with stack.client() as client:
        answer = client.get(f"{stack.api}/bills", params={"account": account})
    return list(answer.json()["data"]) if answer.status_code == 200 else []


def run_bills(stack: Stack, account: str) -> None:
    with stack.client() as client:
        answer = client.post(f"{stack.api}/billjobs", json={"accountIds": [account]})
    assert answer.status_code == 202, answer.text


def usage_total(stack: Stack, account: str, calls: int) -> bool:
    with stack.client() as client:
        answer = client.post(
            f"{stack.api}/usage/query",
            json={
                "startDate": datetime.fromtimestamp(now_s() - 30 * DAY, UTC).isoformat(),
                "endDate": datetime.fromtimestamp(now_s() + DAY, UTC).isoformat(),
                "accountIds": [account],
                "aggregations": ["api_calls"],
            },
        )
    data = answer.json().get("data", []) if answer.status_code == 200 else []
    return bool(data) and Decimal(data[0]["value"]) == calls


def test_usage_becomes_a_versioned_bill_and_a_locked_period_rejects_late_usage(
    stack: Stack,
) -> None:
    account = "cus_billing1"
    start = now_s() - 2 * DAY
    subscribe(stack, account, "starter_monthly", (start, start + 30 * DAY))
    usage(stack, account, "b1", 12_000, "ann")
    stack.wait_for(lambda: usage_total(stack, account, 12_000))
    run_bills(stack, account)
    first = stack.wait_for(lambda: bills_of(stack, account))[0]
    assert first["version"] == 1
    assert first["status"] == "PENDING"
    lines = {
        line["lineItemType"] + ":" + (line.get("aggregationCode") or ""): line
        for line in first["lines"]
    }
    # starter: 10.00 standing charge; calls tiered 10,000 x 0.002 + 2,000 x 0.001 = 22.00;
    # 1 active user x 1.00 (volume); data transfer 0 -> 23.00 usage < 25.00 minimum spend
    assert Decimal(lines["STANDING_CHARGE:"]["subtotal"]) == Decimal("10.00")
    assert Decimal(lines["USAGE:api_calls"]["subtotal"]) == Decimal("22.00")
    assert Decimal(lines["USAGE:active_users"]["subtotal"]) == Decimal("1.00")
    assert Decimal(lines["MINIMUM_SPEND:"]["subtotal"]) == Decimal("2.00")
    assert Decimal(first["total"]) == Decimal("35.00")

    # unchanged usage: a rerun emits nothing new
    run_bills(stack, account)
    usage(stack, account, "b2", 3_000, "bob")
    stack.wait_for(lambda: usage_total(stack, account, 15_000))
    run_bills(stack, account)
    second = stack.wait_for(
        lambda: [b for b in bills_of(stack, account) if b["version"] == 2], timeout=30
    )[0]
    assert second["id"] == first["id"]
    assert Decimal(second["total"]) == Decimal("10.00") + Decimal("25.00") + Decimal("2.00")

    with stack.client() as client:
        refused = client.put(f"{stack.api}/bills/{first['id']}/lock")
        assert refused.status_code == 409, refused.text
        assert "approve" in refused.json()["message"].lower()
        approved = client.put(
            f"{stack.api}/bills/{first['id']}/status", json={"status": "APPROVED"}
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "APPROVED"
        locked = client.put(f"{stack.api}/bills/{first['id']}/lock")
        assert locked.status_code == 200, locked.text
        assert locked.json()["status"] == "LOCKED"
        again = client.put(f"{stack.api}/bills/{first['id']}/status", json={"status": "APPROVED"})
        assert again.status_code == 409

    usage(stack, account, "late-1", 500, "cat")
    consumer_reasons = stack.wait_for(lambda: rejected_for(stack, account), timeout=30)
    assert any("is locked" in reason for reason in consumer_reasons)
    assert usage_total(stack, account, 15_000)


def rejected_for(stack: Stack, account: str) -> list[str]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": f"r-{now_s()}-{id(stack)}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([stack.topics.measurements_rejected])
    reasons = []
    try:
        for _ in range(20):
            message = consumer.poll(0.3)
            if message is not None and not message.error():
                record = orjson.loads(value_of(message))
                if record["account"] == account:
                    reasons.append(record["reason"])
    finally:
        consumer.close()
    return reasons


def test_unknown_bills_and_bad_status_are_clear_errors(stack: Stack) -> None:
    with stack.client() as client:
        assert client.get(f"{stack.api}/bills/bill_nope").status_code == 404
        bad = client.put(f"{stack.api}/bills/bill_nope/status", json={"status": "DONE"})
        assert bad.status_code == 400
        assert client.post(f"{stack.api}/billjobs", json={"accountIds": "x"}).status_code == 400
    with stack.client() as client:
        client.headers["Authorization"] = "Bearer wrong"
        assert client.get(f"{stack.api}/bills").status_code == 401


def test_bad_bill_commands_are_dead_lettered_with_the_reason(stack: Stack) -> None:
    account = f"cus_dl_{now_s()}"
    approve_unknown = {"type": "status", "account": account, "billId": "nope", "status": "APPROVED"}
    stack.produce(
        stack.topics.bill_commands,
        account,
        [b"not json", orjson.dumps({"type": "launch"}), orjson.dumps(approve_unknown)],
    )

    def dead_letters() -> dict[str, dict[str, Any]] | None:
        records = [
            orjson.loads(value) for value in read_values(stack, stack.topics.bill_commands_rejected)
        ]
        by_command = {orjson.dumps(record["command"]).decode(): record for record in records}
        wanted = ('"not json"', '{"type":"launch"}', orjson.dumps(approve_unknown).decode())
        return by_command if all(key in by_command for key in wanted) else None

    records = stack.wait_for(dead_letters, timeout=30)
    assert "Invalid JSON" in records['"not json"']["reason"]
    assert "launch" in records['{"type":"launch"}']["reason"]
    assert (
        f"no bill nope for {account}" in records[orjson.dumps(approve_unknown).decode()]["reason"]
    )
    assert all(r["source"].startswith(f"{stack.topics.bill_commands}[") for r in records.values())


def read_values(stack: Stack, topic: str) -> list[bytes]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": f"dl-{now_s()}-{id(stack)}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(10):
            message = consumer.poll(0.3)
            if message is not None and not message.error():
                values.append(value_of(message))
    finally:
        consumer.close()
    return values
