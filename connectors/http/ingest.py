"""`POST /organizations/{orgId}/measurements`: m3ter's ingest API onto the measurements topic.

The body is m3ter's `{"measurements": [...]}`, 1 to `max_measurements_per_request`
measurements and `max_request_bytes` bytes (413 beyond, checked on Content-Length and
again while the body streams in, so an oversized body is never read whole).

All or nothing: every measurement's structure is checked against the `Measurement`
model before anything is published. If any is invalid, the answer is 400
`{"error": "invalid_measurements", "errors": [{"index", "field", "reason"}, ...]}` listing
every problem of every invalid measurement, and nothing is published. Checks that need
the catalog (unknown meter or field, required fields, ts horizon, derived fields) happen
later in the usage agent, which sends failures to `measurements.rejected`.

Numbers are read exactly (`streams.schemas.numbers`: int and Decimal from the JSON text,
never a float) and a number that cannot be kept exactly within the limits (30 digits
before the decimal point, 20 after) is a 400 naming its field, never rounded.

A valid request is published as one batch envelope per partition (see
`connectors.kafka.measurements`): the measurements exactly as sent, grouped by
`partition_for(account)`, keyed by the account of the group's first measurement.
Order of effects: 1. read and validate the whole body  2. produce every envelope
3. await every acknowledgement (acks=all)  4. answer 200 `{"result": "accepted"}`.
If Kafka does not acknowledge all of them (delivery error or timeout) the answer is 503;
some envelopes may have landed, and a retry is safe: the usage agent de-duplicates by uid.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from connectors.http.auth import ApiError, ApiRoute, json_response, require_org_key
from connectors.http.openapi import JSON, ORG_ERRORS, errors, measurements_schema, request_body
from connectors.kafka.measurements import Envelope, envelopes_by_partition
from streams.schemas.catalog import CODE_PATTERN
from streams.schemas.measurement import (
    MAX_ID_LENGTH,
    NUMBER_MAPS,
    STRING_MAPS,
    Measurement,
    parse_timestamp,
)
from streams.schemas.numbers import LIMIT as NUMBER_LIMIT
from streams.schemas.numbers import DecodeError, decode_json, exact_number
from streams.settings import Settings

if TYPE_CHECKING:
    from connectors.http.app import Edge

log = logging.getLogger(__name__)

# message.timeout.ms of the edge producer is 30 s: every delivery future resolves by
# then; this is only a safety net on top.
ACK_TIMEOUT_S = 35.0
_ERROR_PREFIXES = ("Value error, ", "Assertion failed, ")
# What the pre-check knows how to judge, intersected with the model's own fields: a field
# the model adds (or drops) later sends every measurement carrying it to the model.
_JUDGED = frozenset({"uid", "meter", "account", "ts", "ets", *STRING_MAPS, *NUMBER_MAPS})
_PROPERTIES = _JUDGED & Measurement.model_fields.keys()
_REQUIRED = frozenset(name for name, f in Measurement.model_fields.items() if f.is_required())
_NUMBER_MAPS = frozenset(NUMBER_MAPS)
_STRING_MAPS = frozenset(STRING_MAPS)
_CODE = re.compile(CODE_PATTERN)


def edge_of(request: Request) -> Edge:
    """The process's shared producer, topics and metrics (built in the app's lifespan)."""
    edge: Edge = request.app.state.edge
    return edge


# --- reading the body ------------------------------------------------------------------


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"the request body exceeds {limit} bytes", field="body"
    )


def check_content_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it grows past `limit` bytes."""
    check_content_length(request, limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


def parse_json(body: bytes) -> Any:
    """The body with exact numbers (`decode_json`), or 400 saying where it is not JSON."""
    try:
        return decode_json(body)
    except DecodeError as exc:
        reason = f"the body is not valid JSON: {json_problem(body, exc)}"
        raise ApiError(400, "invalid_json", reason, field="body") from None


def json_problem(text: bytes, error: DecodeError, line: bool = True) -> str:
    """What is wrong with `text` and where: orjson words it with line and column."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        at = f"line {exc.lineno} column {exc.colno}" if line else f"column {exc.colno}"
        return f"{exc.msg} at {at} (position {exc.pos})"
    return str(error)  # JSON to orjson, not to the exact decoder (e.g. a 5,000-digit integer)


# --- structural validation -------------------------------------------------------------


def field_error(error: ErrorDetails) -> dict[str, str]:
    """`{"field": "measure.calls", "reason": ...}` from a pydantic error."""
    reason = error["msg"]
    if error["type"] == "missing":
        reason = "is required"
    elif error["type"] == "extra_forbidden":
        reason = "unknown property"
    else:
        for prefix in _ERROR_PREFIXES:
            reason = reason.removeprefix(prefix)
    return {
        "field": ".".join(str(part) for part in error["loc"]) or "measurement",
        "reason": reason,
    }


def plainly_valid(measurement: object) -> bool:
    """True only for a measurement the `Measurement` model certainly accepts.

    The model costs ~8 us a measurement, most of the edge's CPU; this pre-check of the
    common shape costs ~2 us. It accepts a strict subset of what the model accepts
    (same shared rules: identifier lengths, code pattern, `parse_timestamp`,
    `exact_number`), so the model still judges, and words the errors of, everything else.
    """
    if type(measurement) is not dict:
        return False
    keys = measurement.keys()
    if not (keys >= _REQUIRED and keys <= _PROPERTIES):
        return False
    uid, account, meter = measurement["uid"], measurement["account"], measurement["meter"]
    if type(uid) is not str or not 0 < len(uid) <= MAX_ID_LENGTH:
        return False
    if type(account) is not str or not 0 < len(account) <= MAX_ID_LENGTH:
        return False
    if type(meter) is not str or _CODE.match(meter) is None:
        return False
    ts = parse_timestamp(measurement["ts"])
    if isinstance(ts, str):
        return False
    for name, values in measurement.items():
        if name in _NUMBER_MAPS:
            if type(values) is not dict:
                return False
            for value in values.values():
                if type(value) is int:
                    if not -NUMBER_LIMIT < value < NUMBER_LIMIT:
                        return False
                elif isinstance(exact_number(value), str):
                    return False
        elif name in _STRING_MAPS:
            if type(values) is not dict:
                return False
            for value in values.values():
                if type(value) is not str:
                    return False
        elif name == "ets" and values is not None:
            ets = parse_timestamp(values)
            if isinstance(ets, str) or ets < ts:
                return False
    return True


def measurement_errors(measurement: object) -> list[dict[str, str]]:
    """Every structural problem of one measurement (empty when it is valid)."""
    if plainly_valid(measurement):
        return []
    try:
        Measurement.model_validate(measurement)
    except ValidationError as exc:
        return [field_error(error) for error in exc.errors(include_url=False)]
    return []


def batch_errors(measurements: list[Any]) -> list[dict[str, Any]]:
    """Every structural problem of every measurement, each with its index."""
    if all(map(plainly_valid, measurements)):
        return []
    return [
        {"index": index, **problem}
        for index, measurement in enumerate(measurements)
        for problem in measurement_errors(measurement)
    ]


def measurements_of(document: Any, limit: int) -> list[Any]:
    if type(document) is not dict:
        raise ApiError(
            400,
            "invalid_request",
            'the body must be an object {"measurements": [...]}',
            field="body",
        )
    unknown = sorted(set(document) - {"measurements"})
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown property {unknown[0]!r}", field=unknown[0])
    measurements = document.get("measurements")
    if type(measurements) is not list:
        raise ApiError(
            400, "invalid_request", "measurements must be an array", field="measurements"
        )
    if not measurements:
        raise ApiError(
            400, "invalid_request", "measurements must not be empty", field="measurements"
        )
    if len(measurements) > limit:
        raise ApiError(
            400,
            "too_many_measurements",
            f"at most {limit} measurements per request, got {len(measurements)}",
            field="measurements",
        )
    return measurements


# --- publishing ------------------------------------------------------------------------


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # mark a late failure as seen; the request already answered 503


async def await_acks(futures: Sequence[asyncio.Future[Any]], timeout: float) -> str | None:
    """None once Kafka acknowledged every write; else why it did not (error or timeout)."""
    if not futures:
        return None
    done, pending = await asyncio.wait(futures, timeout=timeout)
    for future in pending:
        future.add_done_callback(_retrieve)
    failures = [str(f.exception()) for f in done if f.exception() is not None]
    if failures:
        return f"{len(failures)} of {len(futures)} writes failed: {failures[0]}"
    if pending:
        return f"{len(pending)} of {len(futures)} writes not acknowledged within {timeout:g}s"
    return None


def unavailable(reason: str) -> ApiError:
    return ApiError(
        503,
        "unavailable",
        f"Kafka did not acknowledge the measurements ({reason}); retrying is safe, "
        "measurements are de-duplicated by uid",
        headers={"Retry-After": "1"},
    )


def produce(edge: Edge, envelopes: Sequence[Envelope]) -> list[asyncio.Future[Any]]:
    topic = edge.topics.measurements
    return [
        edge.producer.produce(topic, e.value, key=e.key, partition=e.partition) for e in envelopes
    ]


# --- the route -------------------------------------------------------------------------


def ingest_router(settings: Settings, ack_timeout_s: float = ACK_TIMEOUT_S) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, tags=["ingest"])
    authorized_org = require_org_key(settings)

    @router.post(
        "/organizations/{orgId}/measurements",
        summary="Submit measurements",
        responses=errors(*ORG_ERRORS, 413, 503),
        openapi_extra=request_body(
            {JSON: measurements_schema(settings.max_measurements_per_request)}
        ),
    )
    async def submit_measurements(
        request: Request, org_id: str = Depends(authorized_org)
    ) -> Response:
        edge = edge_of(request)
        counter = edge.metrics.measurements
        body = await read_body(request, settings.max_request_bytes)
        measurements = measurements_of(parse_json(body), settings.max_measurements_per_request)
        errors = batch_errors(measurements)
        if errors:
            invalid = len({error["index"] for error in errors})
            counter.labels("api", "rejected").inc(len(measurements))
            log.info(
                "org %s: rejected %d measurements (%d invalid)", org_id, len(measurements), invalid
            )
            raise ApiError(
                400,
                "invalid_measurements",
                f"{invalid} of {len(measurements)} measurements are invalid; none was accepted",
                errors=errors,
            )
        envelopes = envelopes_by_partition(measurements, edge.topics.partitions)
        problem = await await_acks(produce(edge, envelopes), ack_timeout_s)
        if problem is not None:
            counter.labels("api", "unavailable").inc(len(measurements))
            log.warning(
                "org %s: %d measurements not acknowledged: %s", org_id, len(measurements), problem
            )
            raise unavailable(problem)
        counter.labels("api", "accepted").inc(len(measurements))
        log.info(
            "org %s: accepted %d measurements in %d envelopes",
            org_id,
            len(measurements),
            len(envelopes),
        )
        return json_response({"result": "accepted"})

    return router
