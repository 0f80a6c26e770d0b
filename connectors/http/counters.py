"""`POST /organizations/{orgId}/counteradjustments`: an account's new count of a counter
(m3ter's CounterAdjustment) onto the `counter.adjustments` topic.

Body: `{"uid", "account", "counter", "date", "value"[, "purchaseOrderNumber"]}`
(`streams.schemas.counters`). `value` is the new absolute count, a whole number read
exactly (2.5 or 3.0 is refused, never rounded). Every problem of the body is a 400
naming its field; nothing is published then. Whether the counter is in the catalog is
checked by the worker, which dead-letters an adjustment it cannot apply to
`counter.adjustments.rejected` with the reason.

Order of effects: 1. read and validate the body  2. produce it, keyed by the account, to
the account's partition  3. await Kafka's acknowledgement (acks=all)  4. answer 200 with
the adjustment as recorded. If Kafka does not acknowledge it, 503: a retry with the same
`uid` is safe, the worker applies a uid once.
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from connectors.http.auth import OrgAccess
from connectors.http.edge import (
    ACK_TIMEOUT_S,
    ApiError,
    ApiRoute,
    await_acks,
    edge_of,
    json_response,
    not_acknowledged,
    read_body,
)
from connectors.http.ingest import parse_json
from connectors.http.keys import Scope
from connectors.http.openapi import JSON, ORG_ERRORS, errors, request_body, schema_of
from streams.partitioning import partition_for
from streams.schemas.counters import CounterAdjustment, CounterAdjustmentRequest
from streams.schemas.errors import problems
from streams.settings import Settings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
ADJUSTMENT_RETRY = "retrying with the same uid is safe, a uid is applied once"
_WORDS = {"missing": "is required", "extra_forbidden": "unknown property"}


def invalid_adjustment(exc: ValidationError, error: str = "invalid_counter_adjustment") -> ApiError:
    """400 naming the first field at fault; `errors` lists every problem."""
    found = problems(exc, whole="body", plain=True, words=_WORDS)
    return ApiError(
        400,
        error,
        "; ".join(map(str, found)),
        field=found[0].field,
        errors=[problem.as_dict() for problem in found],
    )


def counters_router(
    settings: Settings, ack_timeout_s: float = ACK_TIMEOUT_S, *, access: OrgAccess | None = None
) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, tags=["counters"])
    # seats are reported by the same systems that report usage: the ingest scope
    authorized_org = (access or OrgAccess(settings)).requires(Scope.INGEST)

    @router.post(
        "/organizations/{orgId}/counteradjustments",
        summary="Adjust an account's counter",
        responses=errors(*ORG_ERRORS, 413, 503),
        openapi_extra=request_body({JSON: schema_of(CounterAdjustmentRequest)}),
    )
    async def adjust_counter(request: Request, org_id: str = Depends(authorized_org)) -> Response:
        """Set an account's count of a counter (seats, licences) from a date on."""
        edge = edge_of(request)
        document = parse_json(await read_body(request, MAX_BODY_BYTES))
        if type(document) is not dict:
            raise ApiError(400, "invalid_request", "the body must be a JSON object", field="body")
        try:
            wanted = CounterAdjustmentRequest.model_validate(document)
        except ValidationError as exc:
            raise invalid_adjustment(exc) from None
        adjustment = CounterAdjustment(
            **wanted.model_dump(), receivedAt=time.time_ns() // 1_000_000, source="api"
        )
        delivery = edge.producer.produce(
            edge.topics.counter_adjustments,
            adjustment.model_dump_json().encode(),
            key=adjustment.account.encode(),
            partition=partition_for(adjustment.account, settings.partitions),
        )
        problem = await await_acks([delivery], ack_timeout_s)
        if problem is not None:
            log.warning(
                "org %s: counter adjustment %s not acknowledged: %s", org_id, wanted.uid, problem
            )
            raise not_acknowledged("the counter adjustment", problem, ADJUSTMENT_RETRY)
        log.info(
            "org %s: counter adjustment %s accepted: account %s counter %s = %d from %s",
            org_id,
            adjustment.uid,
            adjustment.account,
            adjustment.counter,
            adjustment.value,
            adjustment.date.isoformat(),
        )
        return json_response(adjustment.model_dump(mode="json", exclude={"source"}))

    return router
