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
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from connectors.http.auth import OrgAccess
from connectors.http.edge import (
    ACK_TIMEOUT_S,
    MEASUREMENTS_RETRY,
    ApiError,
    ApiRoute,
    Edge,
    await_acks,
    edge_of,
    json_response,
    not_acknowledged,
    read_body,
)
from connectors.http.keys import Scope
from connectors.http.openapi import JSON, ORG_ERRORS, errors, measurements_schema, request_body
from connectors.http.validation import batch_errors, json_problem
from connectors.kafka.measurements import Envelope, envelopes_by_partition
from streams.schemas.numbers import DecodeError, decode_json
from streams.settings import Settings

log = logging.getLogger(__name__)


# --- reading the body ------------------------------------------------------------------


def parse_json(body: bytes) -> Any:
    """The body with exact numbers (`decode_json`), or 400 saying where it is not JSON."""
    try:
        return decode_json(body)
    except DecodeError as exc:
        reason = f"the body is not valid JSON: {json_problem(body, exc)}"
        raise ApiError(400, "invalid_json", reason, field="body") from None


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
        raise ApiError(
            400,
            "invalid_request",
            f"unknown property {unknown[0]!r}: the body has only 'measurements'",
            field=unknown[0] or "body",  # a property named "" is the body's fault
        )
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


def produce(edge: Edge, envelopes: Sequence[Envelope]) -> list[asyncio.Future[Any]]:
    topic = edge.topics.measurements
    return [
        edge.producer.produce(topic, e.value, key=e.key, partition=e.partition) for e in envelopes
    ]


# --- the route -------------------------------------------------------------------------


def ingest_router(
    settings: Settings, ack_timeout_s: float = ACK_TIMEOUT_S, *, access: OrgAccess | None = None
) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, tags=["ingest"])
    authorized_org = (access or OrgAccess(settings)).requires(Scope.INGEST)

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
        # Reading, checking and encoding 1,000 measurements are ~1.5 ms each: the loop
        # gets a turn between them, so requests arriving together take turns with each
        # other and with usage queries instead of holding the loop for all of theirs.
        await asyncio.sleep(0)
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
        await asyncio.sleep(0)
        envelopes = envelopes_by_partition(measurements, edge.topics.partitions)
        # The decoded measurements (thousands of dicts) go before the wait for Kafka: held
        # across it, the cycle collector moves them to its oldest generation, whose full
        # collections (~100 ms of the edge's loop each) came more than once a second.
        count = len(measurements)
        del measurements
        problem = await await_acks(produce(edge, envelopes), ack_timeout_s)
        if problem is not None:
            counter.labels("api", "unavailable").inc(count)
            log.warning("org %s: %d measurements not acknowledged: %s", org_id, count, problem)
            raise not_acknowledged("the measurements", problem, MEASUREMENTS_RETRY)
        counter.labels("api", "accepted").inc(count)
        log.info("org %s: accepted %d measurements in %d envelopes", org_id, count, len(envelopes))
        return json_response({"result": "accepted"})

    return router
