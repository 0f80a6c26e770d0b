"""Measurements on the real broker → usage agent → exact, de-duplicated hourly usage."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Consumer

from connectors.catalog_io import publish
from connectors.kafka.producer import new_producer
from streams.pages import USAGE, GroupBy, UsageRequest
from tests.fixtures.stack import StackOptions
from tests.stack import Stack
from tests.support import eventually, try_get_json, value_of

pytestmark = pytest.mark.integration


STACK = StackOptions(http=False)


def usage(
    stack: Stack, account: str, aggregations: str, group_by: GroupBy | None = None
) -> dict[str, Any]:
    """The worker's mergeable states of one account (routed by faust to its owner)."""
    now = int(time.time() * 1000)
    ask = UsageRequest(
        account,
        now - 3 * 86_400_000,
        now + 86_400_000,
        tuple(aggregations.split(",")),
        group_by,
    )
    query = httpx.QueryParams(tuple(ask.params()))
    return try_get_json(f"{stack.worker_url}{USAGE}?{query}") or {}


def measurement(uid: str, account: str, ts: datetime, **measure: Any) -> dict[str, Any]:
    return {
        "uid": uid,
        "meter": "api",
        "account": account,
        "ts": ts.isoformat(),
        "measure": measure,
        "who": {"user": f"user-{uid[-1]}"},
    }


def produce(stack: Stack, account: str, values: list[bytes]) -> None:
    producer = new_producer(stack.bootstrap)
    for value in values:
        producer.produce(stack.topics.measurements, key=account.encode(), value=value)
    assert producer.flush(15) == 0


def state_of(result: dict[str, Any], aggregation: str) -> dict[str, Any]:
    rows = [row for row in result.get("rows", []) if row["aggregation"] == aggregation]
    return rows[0]["state"] if rows else {}


def test_envelopes_and_singles_fold_exactly_and_duplicates_count_once(stack: Stack) -> None:
    now = datetime.now(UTC)
    batch = [measurement(f"m{i}", "acme", now, calls=i, bytes=250_000_000) for i in range(1, 6)]
    late = measurement("late-1", "acme", now - timedelta(days=2), calls=100)
    produce(
        stack,
        "acme",
        [
            orjson.dumps({"measurements": batch}),
            orjson.dumps(batch[0]),  # a redelivery of m1
            orjson.dumps(late),
            orjson.dumps({"measurements": batch[1:3]}),  # redelivered again
        ],
    )
    calls = eventually(lambda: state_of(usage(stack, "acme", "api_calls"), "api_calls"))
    eventually(lambda: state_of(usage(stack, "acme", "api_calls"), "api_calls").get("n") == 6)
    calls = state_of(usage(stack, "acme", "api_calls"), "api_calls")
    assert Decimal(calls["s"]) == Decimal(1 + 2 + 3 + 4 + 5 + 100)
    gigabytes = state_of(usage(stack, "acme", "data_transfer"), "data_transfer")
    assert Decimal(gigabytes["s"]) == Decimal("1.25")  # derived: bytes / 1e9
    users = state_of(usage(stack, "acme", "active_users"), "active_users")
    assert sorted(users["u"]) == ["user-1", "user-2", "user-3", "user-4", "user-5"]
    by_day = usage(stack, "acme", "api_calls", group_by="DAY")["rows"]
    assert sorted(Decimal(row["state"]["s"]) for row in by_day) == [Decimal(15), Decimal(100)]


def test_invalid_measurements_are_dead_lettered_with_reason_and_source(stack: Stack) -> None:
    now = datetime.now(UTC)
    good = measurement("ok-1", "globex", now, calls=7)
    unknown_meter = {**measurement("bad-1", "globex", now, calls=1), "meter": "nope"}
    wrong_type = measurement("bad-2", "globex", now, calls="many")
    produce(
        stack,
        "globex",
        [orjson.dumps({"measurements": [good, unknown_meter, wrong_type]}), b"not json"],
    )
    eventually(lambda: state_of(usage(stack, "globex", "api_calls"), "api_calls").get("n") == 1)
    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": f"check-{os.urandom(4).hex()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([stack.topics.measurements_rejected])
    seen: list[dict[str, Any]] = []

    def rejected_reasons() -> set[str] | None:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            seen.append(orjson.loads(value_of(message)))
        reasons = {f"{r['field']}: {r['reason']}" for r in seen if r["account"] in ("globex", None)}
        return reasons if len(reasons) >= 3 else None

    try:
        reasons = eventually(rejected_reasons, timeout=30)
    finally:
        consumer.close()
    assert "meter: unknown meter 'nope'" in reasons
    assert any(r.startswith("measure.calls: expected a number") for r in reasons)
    assert any(r.startswith("value: not JSON") for r in reasons)
    record = next(r for r in seen if r["field"] == "meter")
    assert record["measurement"]["uid"] == "bad-1"
    assert record["source"].startswith(f"{stack.topics.measurements}[")
    assert record["index"] == 1


def test_usage_survives_a_worker_restart_with_identical_totals(stack: Stack) -> None:
    now = datetime.now(UTC)
    produce(
        stack,
        "initech",
        [
            orjson.dumps(
                {"measurements": [measurement(f"r{i}", "initech", now, calls=3) for i in range(4)]}
            )
        ],
    )
    eventually(lambda: state_of(usage(stack, "initech", "api_calls"), "api_calls").get("n") == 4)
    before = usage(stack, "initech", "api_calls,active_users,data_transfer")
    stack.worker.stop()
    stack.start_worker()
    eventually(lambda: usage(stack, "initech", "api_calls,active_users,data_transfer").get("rows"))
    assert usage(stack, "initech", "api_calls,active_users,data_transfer") == before
    # a redelivery after the restart is still recognised as a duplicate
    produce(stack, "initech", [orjson.dumps(measurement("r0", "initech", now, calls=3))])
    produce(stack, "initech", [orjson.dumps(measurement("r9", "initech", now, calls=1))])
    eventually(lambda: state_of(usage(stack, "initech", "api_calls"), "api_calls").get("n") == 5)
    assert Decimal(state_of(usage(stack, "initech", "api_calls"), "api_calls")["s"]) == 13


def test_a_catalog_change_reaches_the_running_worker(stack: Stack) -> None:
    before = (try_get_json(f"{stack.worker_url}/healthz") or {})["catalogItems"]
    document = {
        "meters": [{"code": "events", "dataFields": [{"category": "MEASURE", "code": "n"}]}],
        "aggregations": [
            {"code": "events_total", "meter": "events", "targetField": "n", "aggregation": "SUM"}
        ],
    }
    publish(stack.bootstrap, stack.topics.catalog, document)
    eventually(
        lambda: (
            (try_get_json(f"{stack.worker_url}/healthz") or {}).get("catalogItems") == before + 2
        ),
        timeout=30,
    )
    now = datetime.now(UTC).isoformat()
    new_meter = {"uid": "e1", "meter": "events", "account": "hooli", "ts": now, "measure": {"n": 4}}
    produce(stack, "hooli", [orjson.dumps(new_meter)])
    eventually(
        lambda: state_of(usage(stack, "hooli", "events_total"), "events_total").get("s") == "4"
    )
