"""Ingest API + file upload + direct producer → the usage query API, exactly, on a real broker,
and the same answer after the worker restarts; numbers exact to the last digit on every path."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer

from connectors.kafka.measurements import MeasurementProducer
from streams.schemas.numbers import decode_json
from tests.stack import Stack
from tests.support import value_of
from tests.unit.test_exact_numbers import KEPT, REFUSED

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)


def measurement(account: str, calls: int, user: str, ts: datetime = NOW) -> dict[str, Any]:
    return {
        "uid": uuid.uuid4().hex,
        "meter": "api",
        "account": account,
        "ts": ts.isoformat(),
        "who": {"user": user},
        "measure": {"calls": calls, "bytes": 1_500_000_000},
    }


def query(stack: Stack, accounts: list[str], **extra: Any) -> dict[str, Any]:
    with stack.client() as client:
        answer = client.post(
            f"{stack.api}/usage/query",
            json={
                "startDate": (NOW - timedelta(days=2)).isoformat(),
                "endDate": (NOW + timedelta(days=1)).isoformat(),
                "accountIds": accounts,
                "aggregations": ["api_calls", "active_users", "data_transfer"],
                **extra,
            },
        )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def values(result: dict[str, Any]) -> dict[tuple[str, str], Decimal]:
    return {(row["accountId"], row["aggregation"]): Decimal(row["value"]) for row in result["data"]}


def test_every_ingest_path_lands_exactly_in_the_query_api_and_survives_a_restart(
    stack: Stack,
) -> None:
    api_batch = [measurement("acme", 10, "ann"), measurement("acme", 5, "bob")]
    yesterday = measurement("acme", 100, "ann", NOW - timedelta(days=1))
    with stack.client() as client:
        ingest = client.post(
            f"{stack.api}/measurements", json={"measurements": [*api_batch, yesterday]}
        )
        assert ingest.status_code == 200, ingest.text
        assert ingest.json() == {"result": "accepted"}
        # a retry of the same request changes nothing (uids)
        assert (
            client.post(f"{stack.api}/measurements", json={"measurements": api_batch}).status_code
            == 200
        )
        lines = b"\n".join(orjson.dumps(measurement("globex", 7, f"u{i}")) for i in range(3))
        upload = client.post(
            f"{stack.api}/fileuploads/measurements",
            content=lines,
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert upload.status_code == 200, upload.text
        assert upload.json()["accepted"] == 3
        csv = "uid,meter,account,ts,who.user,measure.calls\n" + "".join(
            f"c{i}-{uuid.uuid4().hex[:6]},api,globex,{NOW.isoformat()},csv-user,{i}\n"
            for i in range(1, 5)
        )
        upload_csv = client.post(
            f"{stack.api}/fileuploads/measurements",
            content=csv.encode(),
            headers={"Content-Type": "text/csv"},
        )
        assert upload_csv.status_code == 200, upload_csv.text
        assert upload_csv.json()["accepted"] == 4
    with MeasurementProducer(stack.bootstrap, stack.topics.measurements, 3) as producer:
        for _ in range(4):
            producer.send(measurement("initech", 25, "carl"))
    expected = {
        ("acme", "api_calls"): Decimal(115),
        ("acme", "active_users"): Decimal(2),
        ("acme", "data_transfer"): Decimal("4.5"),
        ("globex", "api_calls"): Decimal(21 + 10),
        ("globex", "active_users"): Decimal(4),
        ("initech", "api_calls"): Decimal(100),
        ("initech", "active_users"): Decimal(1),
    }

    def matches() -> bool:
        got = values(query(stack, ["acme", "globex", "initech"]))
        return all(got.get(key) == value for key, value in expected.items())

    stack.wait_for(matches, timeout=45)
    by_day = query(stack, ["acme"], timeGroup="DAY")["data"]
    calls_by_day = sorted(Decimal(r["value"]) for r in by_day if r["aggregation"] == "api_calls")
    assert calls_by_day == [Decimal(15), Decimal(100)]
    total = query(stack, ["acme", "globex", "initech"], groupByAccount=False)["data"]
    assert {r["aggregation"]: Decimal(r["value"]) for r in total}["api_calls"] == Decimal(246)

    before = query(stack, ["acme", "globex", "initech"])
    stack.worker.stop()
    stack.start_worker()
    stack.wait_for(lambda: query(stack, ["acme", "globex", "initech"]) == before, timeout=60)


def test_numbers_arrive_exactly_through_every_path_and_the_rest_is_refused_naming_the_field(
    stack: Stack,
) -> None:
    """12345678901234567890123, 2**64, a 40-digit decimal, -0, 1E+2… summed exactly; 1e-400
    and the other numbers that cannot be kept exactly refused, on every path."""
    run = uuid.uuid4().hex[:6]
    api, jsonl, csv, raw = (f"exact-{path}-{run}" for path in ("api", "jsonl", "csv", "raw"))

    def as_text(account: str, index: int, number: str) -> str:
        return (
            f'{{"uid":"{account}-{index}","meter":"api","account":"{account}",'
            f'"ts":"{NOW.isoformat()}","who":{{"user":"u"}},"measure":{{"calls":{number}}}}}'
        )

    def items(account: str, numbers: Any) -> list[str]:
        return [as_text(account, i, number) for i, number in enumerate(numbers)]

    refused = list(REFUSED)
    with stack.client() as client:
        body = '{"measurements": [' + ",".join(items(api, KEPT)) + "]}"
        accepted = client.post(f"{stack.api}/measurements", content=body.encode())
        assert accepted.status_code == 200, accepted.text
        tiny = '{"measurements": [' + as_text(api, 99, "1e-400") + "]}"
        refusal = client.post(f"{stack.api}/measurements", content=tiny.encode())
        assert refusal.status_code == 400
        assert refusal.json()["errors"] == [
            {"index": 0, "field": "measure.calls", "reason": REFUSED["1e-400"]}
        ]
        lines = "\n".join(items(jsonl, [*KEPT, *refused]))
        rows = "\n".join(
            f"{csv}-{i},api,{csv},{NOW.isoformat()},u,{number}"
            for i, number in enumerate([*KEPT, *refused])
        )
        for content, content_type in (
            (lines, "application/x-ndjson"),
            ("uid,meter,account,ts,who.user,measure.calls\n" + rows, "text/csv"),
        ):
            upload = client.post(
                f"{stack.api}/fileuploads/measurements",
                content=content.encode(),
                headers={"Content-Type": content_type},
            )
            assert upload.status_code == 200, upload.text
            answer = upload.json()
            assert (answer["accepted"], answer["rejected"]) == (len(KEPT), len(REFUSED))
            assert {(e["field"], e["reason"]) for e in answer["errors"]} == {
                ("measure.calls", reason) for reason in REFUSED.values()
            }
    envelope = '{"measurements": [' + ",".join(items(raw, [*KEPT, *refused])) + "]}"
    stack.produce(stack.topics.measurements, raw, [envelope.encode()])

    exact = sum(map(Fraction, KEPT.values()))

    def totals() -> dict[str, Fraction] | None:
        got = values(query(stack, [api, jsonl, csv, raw]))
        calls = {account: got.get((account, "api_calls")) for account in (api, jsonl, csv, raw)}
        exact_calls = {a: Fraction(v) for a, v in calls.items() if v is not None}
        return exact_calls if len(exact_calls) == len(calls) else None

    assert stack.wait_for(totals, timeout=45) == dict.fromkeys((api, jsonl, csv, raw), exact)
    assert (
        str(values(query(stack, [raw]))[(raw, "api_calls")])
        == "1000000012396405013142382359729.22345678901234567889"
    )
    dead = rejected(stack, raw, len(REFUSED))
    assert [(r["field"], r["reason"]) for r in dead] == [
        ("measure.calls", reason) for reason in REFUSED.values()
    ]
    sent_refused = [r["measurement"]["measure"]["calls"] for r in dead]
    assert sent_refused[2] == 1234567890123456789012345678901234567890  # kept, not rounded


def rejected(stack: Stack, account: str, count: int) -> list[dict[str, Any]]:
    """The first `count` dead letters of `account`, read with exact numbers."""
    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([stack.topics.measurements_rejected])
    seen: list[dict[str, Any]] = []

    def enough() -> list[dict[str, Any]] | None:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            document = decode_json(value_of(message))
            if document["account"] == account:
                seen.append(document)
        return seen if len(seen) >= count else None

    try:
        return stack.wait_for(enough, timeout=30)
    finally:
        consumer.close()


def test_a_bad_query_names_the_field(stack: Stack) -> None:
    with stack.client() as client:
        answer = client.post(
            f"{stack.api}/usage/query",
            json={
                "startDate": "2026-01-02T00:00:00Z",
                "endDate": "2026-01-01T00:00:00Z",
                "aggregations": ["api_calls"],
            },
        )
        assert answer.status_code == 400
        assert "endDate must be after startDate" in answer.text
        unknown = client.post(
            f"{stack.api}/usage/query",
            json={
                "startDate": "2026-01-01T00:00:00Z",
                "endDate": "2026-01-02T00:00:00Z",
                "accountIds": ["acme"],
                "aggregations": ["nope"],
            },
        )
        assert unknown.status_code == 400
        assert "unknown aggregation" in unknown.text
