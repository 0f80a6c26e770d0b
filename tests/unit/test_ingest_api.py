"""The ingest edge without Kafka: ingest API, file upload and their error paths.

The app is the real `create_app`; its producer is replaced by a fake that records what
would be published and acknowledges (or fails) each write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from connectors.http.app import create_app
from connectors.http.edge import Edge
from connectors.http.ingest import ingest_router
from connectors.http.uploads import UploadLimits, uploads_router
from connectors.http.uploads.parsers import (
    CsvParser,
    JsonArrayParser,
    JsonLinesParser,
    Parser,
    Record,
    Unreadable,
)
from connectors.http.validation import plainly_valid
from connectors.kafka.measurements import PartitionBatcher, encode_envelope
from connectors.metrics import Metrics
from streams.partitioning import partition_for
from streams.schemas.catalog import CODE_PATTERN
from streams.schemas.measurement import NUMBER_MAPS, STRING_MAPS, Measurement
from streams.schemas.numbers import NOT_FINITE, decode_json, exact_number
from streams.settings import Settings
from streams.topics import Topics
from tests.unit.edge_stubs import FakeProducer
from tests.unit.test_exact_numbers import KEPT, REFUSED

ORG = "acme-org"
KEY = "key-2"
AUTH = {"Authorization": f"Bearer {KEY}"}
MEASUREMENTS = f"/organizations/{ORG}/measurements"
UPLOADS = f"/organizations/{ORG}/fileuploads/measurements"
PARTITIONS = 4


def settings_for(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "org_id": ORG,
        "api_keys": f"key-1,{KEY}",
        "partitions": PARTITIONS,
        "topic_prefix": "unit.",
    }
    return Settings(**{**values, **overrides})


def with_edge(app: FastAPI, settings: Settings, producer: FakeProducer) -> FastAPI:
    metrics = getattr(app.state, "metrics", None) or Metrics()
    app.state.edge = Edge(settings, Topics.from_settings(settings), metrics, producer)  # type: ignore[arg-type]
    return app


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def settings() -> Settings:
    return settings_for()


@pytest.fixture
async def client(settings: Settings, producer: FakeProducer) -> AsyncIterator[httpx.AsyncClient]:
    app = with_edge(create_app(settings), settings, producer)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        yield client


def measurement(n: int = 0, account: str = "acme", **fields: Any) -> dict[str, Any]:
    return {
        "uid": f"u-{n}",
        "meter": "api",
        "account": account,
        "ts": "2024-04-01T10:00:00Z",
        "measure": {"calls": n},
        **fields,
    }


def body(*measurements: dict[str, Any]) -> bytes:
    return orjson.dumps({"measurements": list(measurements)})


class Chunks:
    """A streamed request body that counts how many of its chunks were read."""

    def __init__(self, chunk: bytes, count: int) -> None:
        self.chunk, self.count, self.pulled = chunk, count, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.pulled += 1
            yield self.chunk


# --- auth ------------------------------------------------------------------------------


async def test_a_request_without_a_key_is_401_with_a_bearer_challenge(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    response = await client.post(MEASUREMENTS, content=body(measurement()))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"
    assert producer.sent == []


async def test_a_wrong_key_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post(
        MEASUREMENTS, content=body(measurement()), headers={"Authorization": "Bearer key-3"}
    )
    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthorized",
        "message": "invalid API key",
        "field": "Authorization",
    }


async def test_every_configured_key_is_accepted(client: httpx.AsyncClient) -> None:
    for key in ("key-1", "key-2"):
        response = await client.post(
            MEASUREMENTS, content=body(measurement()), headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200, response.text


async def test_without_configured_keys_every_request_is_401_naming_the_setting(
    producer: FakeProducer,
) -> None:
    settings = settings_for(api_keys="")
    app = with_edge(create_app(settings), settings, producer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as c:
        response = await c.post(MEASUREMENTS, content=body(measurement()), headers=AUTH)
    assert response.status_code == 401
    assert "METERLINE_API_KEYS is not set" in response.json()["message"]


async def test_an_unknown_org_is_404_but_only_for_an_authenticated_caller(
    client: httpx.AsyncClient,
) -> None:
    path = "/organizations/other-org/measurements"
    anonymous = await client.post(path, content=body(measurement()))
    authenticated = await client.post(path, content=body(measurement()), headers=AUTH)
    assert anonymous.status_code == 401
    assert authenticated.status_code == 404
    assert authenticated.json()["error"] == "not_found"


# --- ingest API ------------------------------------------------------------------------


async def test_accepted_measurements_go_out_as_one_envelope_per_partition(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    accounts = [f"acct-{n}" for n in range(12)]
    sent = [measurement(n, account, who={"user": "bob"}) for n, account in enumerate(accounts)]
    response = await client.post(MEASUREMENTS, content=body(*sent), headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"result": "accepted"}
    partitions = {partition_for(account, PARTITIONS) for account in accounts}
    assert Counter(s.partition for s in producer.sent) == Counter(partitions)
    for envelope in producer.sent:
        assert envelope.topic == "unit.measurements"
        assert envelope.key == envelope.measurements[0]["account"].encode()
        assert {partition_for(m["account"], PARTITIONS) for m in envelope.measurements} == {
            envelope.partition
        }
    assert sorted(producer.measurements, key=lambda m: m["uid"]) == sorted(
        sent, key=lambda m: m["uid"]
    )


async def test_accepted_measurements_are_counted_in_metrics(
    settings: Settings, producer: FakeProducer
) -> None:
    app = with_edge(create_app(settings), settings, producer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as c:
        await c.post(MEASUREMENTS, content=body(measurement(1), measurement(2)), headers=AUTH)
    metrics: Metrics = app.state.edge.metrics
    labels = {"source": "api", "outcome": "accepted"}
    assert metrics.registry.get_sample_value("meterline_ingest_measurements_total", labels) == 2


async def test_a_body_declared_larger_than_the_limit_is_413_before_it_is_read(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    chunks = Chunks(b" " * 100_000, 6)
    headers = {**AUTH, "Content-Length": "600000"}
    response = await client.post(MEASUREMENTS, content=chunks, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert chunks.pulled == 0
    assert producer.sent == []


async def test_a_streamed_body_over_the_limit_is_413_without_reading_all_of_it(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    chunks = Chunks(b" " * 100_000, 20)
    response = await client.post(MEASUREMENTS, content=chunks, headers=AUTH)
    assert response.status_code == 413
    assert chunks.pulled <= 6
    assert producer.sent == []


async def test_a_body_that_is_not_json_is_400_naming_the_position(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(MEASUREMENTS, content=b'{"measurements": [}', headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    assert "line 1 column 19" in response.json()["message"]


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"[]", "body"),
        (b'{"measurement": []}', "measurement"),
        (b'{"measurements": {}}', "measurements"),
        (b'{"measurements": []}', "measurements"),
    ],
)
async def test_a_body_of_the_wrong_shape_is_400(
    client: httpx.AsyncClient, content: bytes, field: str
) -> None:
    response = await client.post(MEASUREMENTS, content=content, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json().get("field") == field


async def test_more_than_1000_measurements_is_400(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    small = {"uid": "u", "meter": "m", "account": "a", "ts": "2024-04-01T00:00:00Z"}
    response = await client.post(MEASUREMENTS, content=body(*[small] * 1001), headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"] == "too_many_measurements"
    assert "1001" in response.json()["message"]
    assert producer.sent == []


async def test_invalid_measurements_are_listed_by_index_and_field_and_nothing_is_published(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    sent = [
        measurement(0),
        measurement(1, measure={"calls": "many"}),
        measurement(2),
        {k: v for k, v in measurement(3).items() if k != "account"} | {"color": "red"},
    ]
    response = await client.post(MEASUREMENTS, content=body(*sent), headers=AUTH)
    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "invalid_measurements"
    assert answer["errors"] == [
        {"index": 1, "field": "measure.calls", "reason": "expected a number"},
        {"index": 3, "field": "account", "reason": "is required"},
        {"index": 3, "field": "color", "reason": "unknown property"},
    ]
    assert producer.sent == []


async def test_a_measurement_with_an_empty_field_name_is_400_naming_the_map_and_the_rule(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    sent = [measurement(0, measure={"": 1}), measurement(1, who={"": "ann"})]
    response = await client.post(MEASUREMENTS, content=body(*sent), headers=AUTH)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"index": 0, "field": "measure", "reason": "a field name must not be empty"},
        {"index": 1, "field": "who", "reason": "a field name must not be empty"},
    ]
    assert producer.sent == []


async def test_a_failed_delivery_is_503_and_says_a_retry_is_safe(settings: Settings) -> None:
    app = with_edge(create_app(settings), settings, FakeProducer(refuse="Local: Message timed out"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as c:
        response = await c.post(MEASUREMENTS, content=body(measurement()), headers=AUTH)
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert "Message timed out" in response.json()["message"]
    assert "retrying is safe" in response.json()["message"]


async def test_no_acknowledgement_within_the_timeout_is_503(settings: Settings) -> None:
    app = with_edge(FastAPI(), settings, FakeProducer(silent=True))
    app.include_router(ingest_router(settings, ack_timeout_s=0.05))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as c:
        response = await c.post(MEASUREMENTS, content=body(measurement()), headers=AUTH)
    assert response.status_code == 503
    assert "not acknowledged within 0.05s" in response.json()["message"]


# --- exact numbers (the values of test_exact_numbers.py) ------------------------------


def as_text(index: int, number: str) -> str:
    """A measurement whose `measure.bytes` is the JSON number `number`, written as text."""
    return (
        f'{{"uid":"n-{index}","meter":"api","account":"acme","ts":"2024-04-01T10:00:00Z",'
        f'"measure":{{"bytes":{number}}}}}'
    )


async def post_numbers(client: httpx.AsyncClient, *numbers: str) -> httpx.Response:
    """An ingest request of one measurement per number (its `measure.bytes`)."""
    items = ",".join(as_text(i, t) for i, t in enumerate(numbers))
    return await client.post(MEASUREMENTS, content=f'{{"measurements": [{items}]}}', headers=AUTH)


def published_numbers(producer: FakeProducer) -> dict[str, Decimal | str]:
    """uid -> the exact value of `measure.bytes` as published (read without floats)."""
    return {
        measurement["uid"]: exact_number(measurement["measure"]["bytes"])
        for sent in producer.sent
        for measurement in decode_json(sent.value)["measurements"]
    }


async def test_the_ingest_api_publishes_every_number_exactly_as_sent(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    response = await post_numbers(client, *KEPT)
    assert response.status_code == 200, response.text
    assert published_numbers(producer) == {f"n-{i}": v for i, v in enumerate(KEPT.values())}
    published = b"".join(sent.value for sent in producer.sent)
    assert b'"bytes":12345678901234567890.12345678901234567890' in published
    assert b'"bytes":12345678901234567890123' in published


@pytest.mark.parametrize("text", REFUSED)
async def test_the_ingest_api_refuses_a_number_it_cannot_keep_exactly_naming_the_field(
    client: httpx.AsyncClient, producer: FakeProducer, text: str
) -> None:
    response = await post_numbers(client, "1", text)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"index": 1, "field": "measure.bytes", "reason": REFUSED[text]}
    ]
    assert producer.sent == []


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
async def test_the_ingest_api_refuses_nan_and_infinity_as_not_json(
    client: httpx.AsyncClient, producer: FakeProducer, text: str
) -> None:
    response = await post_numbers(client, text)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    assert "line 1 column" in response.json()["message"]
    assert producer.sent == []


# --- file upload -----------------------------------------------------------------------


def lines(*records: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


async def upload(client: httpx.AsyncClient, content: Any, content_type: str) -> httpx.Response:
    return await client.post(
        UPLOADS, content=content, headers={**AUTH, "Content-Type": content_type}
    )


async def test_a_csv_upload_maps_columns_to_fields_and_numbers(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    csv = (
        b"uid,meter,account,ts,measure.calls,measure.bytes,who.user\r\n"
        b"u-1,api,acme,2024-04-01T10:00:00Z,3,1.5,bob\r\n"
        b'u-2,api,acme,2024-04-01T11:00:00Z,,2e3,"smith, jr"\r\n'
    )
    response = await upload(client, csv, "text/csv")
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2
    assert producer.measurements == [
        {
            "uid": "u-1",
            "meter": "api",
            "account": "acme",
            "ts": "2024-04-01T10:00:00Z",
            "measure": {"calls": 3, "bytes": 1.5},
            "who": {"user": "bob"},
        },
        {
            "uid": "u-2",
            "meter": "api",
            "account": "acme",
            "ts": "2024-04-01T11:00:00Z",
            "measure": {"bytes": 2000.0},
            "who": {"user": "smith, jr"},
        },
    ]


async def test_a_csv_upload_reports_bad_rows_by_line_and_publishes_the_rest(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    csv = (
        b"uid,meter,account,ts,measure.calls\n"
        b"u-1,api,acme,2024-04-01T10:00:00Z,3\n"
        b"u-2,api,acme,2024-04-01T10:00:00Z,three\n"
        b"\n"
        b"u-3,api,acme,2024-04-01T10:00:00Z,3,extra\n"
        b"u-4,api,,2024-04-01T10:00:00Z,4\n"
    )
    response = await upload(client, csv, "text/csv")
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 3)
    assert answer["errors"] == [
        {"line": 3, "field": "measure.calls", "reason": "expected a number"},
        {"line": 5, "field": "measurement", "reason": "6 cells, but the header has 5"},
        {"line": 6, "field": "account", "reason": "is required"},
    ]
    assert [m["uid"] for m in producer.measurements] == ["u-1"]


async def test_a_csv_header_that_names_no_field_is_400_and_publishes_nothing(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    csv = b"uid,meter,account,ts,calls\nu-1,api,acme,2024-04-01T10:00:00Z,3\n"
    response = await upload(client, csv, "text/csv")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_upload"
    assert "column 5 'calls'" in response.json()["message"]
    assert producer.sent == []


async def test_a_json_lines_upload_publishes_valid_lines_as_sent_and_reports_the_others(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    content = (
        lines(measurement(1))
        + b"{not json\n"
        + lines(measurement(2, ts="yesterday"), measurement(3, account="other"))
    )
    response = await upload(client, content, "application/x-ndjson")
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (2, 2)
    assert [(e["line"], e["field"]) for e in answer["errors"]] == [(2, "measurement"), (3, "ts")]
    assert sorted(m["uid"] for m in producer.measurements) == ["u-1", "u-3"]
    assert orjson.dumps(measurement(1)) in b"".join(s.value for s in producer.sent)


@pytest.mark.parametrize(
    "document",
    [
        lambda ms: orjson.dumps(ms, option=orjson.OPT_INDENT_2),
        lambda ms: orjson.dumps({"measurements": ms}),
    ],
    ids=["array", "wrapped"],
)
async def test_a_json_upload_is_read_element_by_element_across_tiny_chunks(
    client: httpx.AsyncClient, producer: FakeProducer, document: Any
) -> None:
    sent = [measurement(1), measurement(2, measure={"calls": -1.25}), measurement(3, meter="")]
    content = document(sent)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 7):
            yield content[start : start + 7]

    response = await upload(client, chunks(), "application/json")
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (2, 1)
    assert answer["errors"][0]["index"] == 2
    assert answer["errors"][0]["field"] == "meter"
    assert producer.measurements == sent[:2]


def exact_file(kind: str, numbers: list[str]) -> tuple[bytes, str]:
    """A file of one measurement per number (its `measure.bytes`), and its Content-Type."""
    if kind == "csv":
        rows = [f"n-{i},api,acme,2024-04-01T10:00:00Z,{t}" for i, t in enumerate(numbers)]
        return "\n".join(["uid,meter,account,ts,measure.bytes", *rows]).encode(), "text/csv"
    items = [as_text(i, t) for i, t in enumerate(numbers)]
    if kind == "jsonl":
        return "\n".join(items).encode(), "application/x-ndjson"
    return ("[\n" + ",\n".join(items) + "\n]").encode(), "application/json"


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv"])
async def test_an_upload_publishes_every_number_exactly_and_refuses_what_it_cannot_keep(
    client: httpx.AsyncClient, producer: FakeProducer, kind: str
) -> None:
    numbers = [*KEPT, *REFUSED]
    content, content_type = exact_file(kind, numbers)
    answer = (await upload(client, content, content_type)).json()
    assert (answer["accepted"], answer["rejected"]) == (len(KEPT), len(REFUSED))
    assert [(e["field"], e["reason"]) for e in answer["errors"]] == [
        ("measure.bytes", reason) for reason in REFUSED.values()
    ]
    assert published_numbers(producer) == {f"n-{i}": v for i, v in enumerate(KEPT.values())}


async def test_a_json_lines_upload_publishes_each_number_byte_for_byte(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    content, content_type = exact_file("jsonl", list(KEPT))
    assert (await upload(client, content, content_type)).json()["accepted"] == len(KEPT)
    published = b"".join(sent.value for sent in producer.sent)
    assert all(line in published for line in content.split(b"\n"))


async def test_nan_in_a_json_upload_is_refused_naming_the_field_and_the_rest_is_read(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    content, content_type = exact_file("json", ["1", "NaN", "-Infinity", "2"])
    answer = (await upload(client, content, content_type)).json()
    assert (answer["accepted"], answer["rejected"]) == (2, 2)
    assert [(e["index"], e["field"], e["reason"]) for e in answer["errors"]] == [
        (1, "measure.bytes", NOT_FINITE),
        (2, "measure.bytes", NOT_FINITE),
    ]
    assert published_numbers(producer) == {"n-0": 1, "n-3": 2}


async def test_a_json_syntax_error_ends_the_job_after_what_was_read(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    content = b"[\n" + orjson.dumps(measurement(1)) + b",\n{oops}\n]"
    response = await upload(client, content, "application/json")
    answer = response.json()
    assert response.status_code == 200
    assert (answer["accepted"], answer["rejected"]) == (1, 1)
    assert answer["errors"][-1]["line"] == 3
    assert "the rest of the file was not read" in answer["errors"][-1]["reason"]
    assert len(producer.measurements) == 1


async def test_a_json_upload_that_is_not_an_array_is_400(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    response = await upload(client, orjson.dumps(measurement(1)), "application/json")
    assert response.status_code == 400
    assert "must be an array" in response.json()["message"]
    assert producer.sent == []


async def test_a_multipart_upload_reads_the_file_field(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    files = {
        "file": ("usage.jsonl", lines(measurement(1), measurement(2)), "application/octet-stream")
    }
    response = await client.post(UPLOADS, files=files, data={"note": "april"}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2
    assert sorted(m["uid"] for m in producer.measurements) == ["u-1", "u-2"]


async def test_a_multipart_upload_without_a_file_field_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(UPLOADS, files={"data": ("x.csv", b"uid\n")}, headers=AUTH)
    assert response.status_code == 400
    assert "no 'file' field" in response.json()["message"]


async def test_an_upload_of_an_unknown_format_is_415(client: httpx.AsyncClient) -> None:
    response = await upload(client, b"<xml/>", "application/xml")
    assert response.status_code == 415
    assert "text/csv" in response.json()["message"]


async def test_an_upload_flushes_an_envelope_every_500_measurements_of_a_partition(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    response = await upload(
        client, lines(*(measurement(n) for n in range(1200))), "application/jsonl"
    )
    assert response.json()["accepted"] == 1200
    assert [len(s.measurements) for s in producer.sent] == [500, 500, 200]
    assert {s.partition for s in producer.sent} == {partition_for("acme", PARTITIONS)}


async def test_an_upload_over_the_size_limit_is_413(
    settings: Settings, producer: FakeProducer
) -> None:
    app = with_edge(FastAPI(), settings, producer)
    app.include_router(uploads_router(settings, UploadLimits(max_upload_bytes=10_000)))
    one = lines(measurement(1))
    chunks = Chunks(one * 40, 50)  # ~4 kB per chunk, no Content-Length
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as c:
        declared = await c.post(
            UPLOADS,
            content=b"x" * 10_001,
            headers={**AUTH, "Content-Type": "application/jsonl"},
        )
        streamed = await c.post(
            UPLOADS, content=chunks, headers={**AUTH, "Content-Type": "application/jsonl"}
        )
    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert chunks.pulled < 50
    assert streamed.json()["accepted"] == len(producer.measurements)


async def test_an_upload_is_answered_only_after_kafka_acknowledged(settings: Settings) -> None:
    app = with_edge(create_app(settings), settings, FakeProducer(refuse="Local: Message timed out"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as c:
        response = await upload(c, lines(measurement(1)), "application/jsonl")
    assert response.status_code == 503


async def test_a_job_result_can_be_fetched_again_by_its_id(client: httpx.AsyncClient) -> None:
    content = lines(measurement(1), measurement(2, ts="never"))
    first = (await upload(client, content, "application/jsonl")).json()
    again = await client.get(f"{UPLOADS}/{first['jobId']}", headers=AUTH)
    missing = await client.get(f"{UPLOADS}/nope", headers=AUTH)
    assert again.json() == first
    assert (first["accepted"], first["rejected"]) == (1, 1)
    assert missing.status_code == 404
    assert (await upload(client, content, "application/jsonl")).json()["jobId"] == first["jobId"]


async def test_job_results_need_the_api_key(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{UPLOADS}/anything")
    assert response.status_code == 401


async def test_an_upload_lists_only_the_first_100_errors(client: httpx.AsyncClient) -> None:
    content = lines(*(measurement(n, ts="bad") for n in range(150)))
    answer = (await upload(client, content, "application/jsonl")).json()
    assert answer["rejected"] == 150
    assert len(answer["errors"]) == 100
    assert answer["errors"][-1]["line"] == 100


# --- parsers ---------------------------------------------------------------------------


def parse(parser: Parser, content: bytes, step: int) -> list[Record | Unreadable]:
    out: list[Record | Unreadable] = []
    for start in range(0, len(content), step):
        out += parser.feed(content[start : start + step])
    out += parser.close()
    return out


@pytest.mark.parametrize("step", [1, 5, 4096])
def test_csv_records_may_span_lines_inside_quotes_whatever_the_chunking(step: int) -> None:
    content = b'\xef\xbb\xbfuid,who.user\r\nu-1,"bob\nsmith"\r\nu-2,"say ""hi"""\n"u-3,x\n'
    records = parse(CsvParser(1000), content, step)
    assert records == [
        Record(2, {"uid": "u-1", "who": {"user": "bob\nsmith"}}),
        Record(4, {"uid": "u-2", "who": {"user": 'say "hi"'}}),
        Unreadable(5, "a quoted cell is never closed"),
    ]


@pytest.mark.parametrize("step", [1, 3, 4096])
def test_json_array_elements_keep_their_line_and_index_whatever_the_chunking(step: int) -> None:
    content = b'{"measurements": [\n {"uid": "a"},\n {"uid": "b"}, 7\n]\n}\n'
    records = parse(JsonArrayParser(1000), content, step)
    assert records == [
        Record(2, {"uid": "a"}, None, 0),
        Record(3, {"uid": "b"}, None, 1),
        Record(3, 7, None, 2),
    ]


def test_an_overlong_line_is_reported_once_and_skipped() -> None:
    content = b'{"uid": "a"}\n' + b"x" * 100 + b'\n{"uid": "b"}'
    records = parse(JsonLinesParser(50), content, 16)
    assert records == [
        Record(1, {"uid": "a"}, b'{"uid": "a"}'),
        Unreadable(2, "the line is longer than 50 bytes"),
        Record(3, {"uid": "b"}, b'{"uid": "b"}'),
    ]


def test_the_batcher_starts_a_new_envelope_before_one_grows_past_its_byte_limit() -> None:
    batcher = PartitionBatcher(partitions=1, batch_size=100, max_bytes=60)
    item = b'{"uid":"0123456789"}'  # 20 bytes
    ready = [batcher.add("acme", item) for _ in range(3)]
    rest = batcher.drain()
    full = [envelope for envelope in ready if envelope is not None]
    assert [e.count for e in full + rest] == [2, 1]
    assert full[0].value == encode_envelope([item, item])
    assert all(len(e.value) <= 60 for e in full + rest)


# --- the structural pre-check ----------------------------------------------------------


def _mostly(valid: st.SearchStrategy[Any], *edges: Any) -> st.SearchStrategy[Any]:
    """Usually a valid value, sometimes an edge case (so both verdicts get exercised)."""
    return st.one_of(valid, valid, valid, st.sampled_from(edges))


_ids = _mostly(st.text(min_size=1, max_size=200), "", "x" * 201, 7, None)
_codes = _mostly(st.from_regex(CODE_PATTERN, fullmatch=True), "9lives", "a" * 81, "a b", "")
_zones = st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(minutes=330))])
_timestamps = _mostly(
    st.datetimes(timezones=_zones).map(datetime.isoformat),
    "2024-04-01T10:00:00",
    "2024-04-01",
    "2024-02-30T00:00:00Z",
    "20240401T100000Z",
    "yesterday",
    1711965600,
)
_numbers = _mostly(
    st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
    float("nan"),
    float("inf"),
    True,
    "1",
    None,
    2**70,
)
_strings = _mostly(st.text(max_size=10), 1, None, 1.5)
_measurements = st.fixed_dictionaries(
    {"uid": _ids, "meter": _codes, "account": _ids, "ts": _timestamps},
    optional={
        "ets": st.one_of(st.none(), _timestamps),
        **dict.fromkeys(STRING_MAPS, _mostly(st.dictionaries(st.text(), _strings), [], None)),
        **dict.fromkeys(NUMBER_MAPS, _mostly(st.dictionaries(st.text(), _numbers), "1", None)),
        "color": st.just("red"),
    },
)


@examples(max_examples=800, deadline=None)
@given(_measurements)
def test_the_pre_check_accepts_nothing_the_measurement_model_rejects(raw: dict[str, Any]) -> None:
    if plainly_valid(raw):
        Measurement.model_validate(raw)


@pytest.mark.parametrize(
    "raw",
    [
        measurement(1),
        measurement(2, ets="2024-04-01T10:30:00+00:00", who={"user": "bob"}, cost={"usd": 0.25}),
        measurement(3, measure={}, income={"usd": 10}, metadata={"batch": "7"}),
    ],
)
def test_the_pre_check_takes_the_common_shape_so_the_model_is_skipped(raw: dict[str, Any]) -> None:
    assert plainly_valid(raw)
