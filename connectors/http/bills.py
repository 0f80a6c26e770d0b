"""Bill API: bill runs on demand, reads, approve and lock.

    POST /organizations/{orgId}/billjobs                {"accountIds": [...]} or {} = all
    GET  /organizations/{orgId}/bills?account={code}    latest version of each bill
    GET  /organizations/{orgId}/bills/{id}
    PUT  /organizations/{orgId}/bills/{id}/status       {"status": "APPROVED"|"LOCKED"}
    PUT  /organizations/{orgId}/bills/{id}/lock

Writes become commands on `bill.commands` (only the worker owning an account writes
its bills); the answer comes after Kafka acknowledged the command. Reads come from a
read model of the `bills` topic kept by this process (`connectors.bill_view`), the
same snapshots every downstream consumer sees. A status change the lifecycle forbids
is refused here with 409 and the reason (the worker checks again).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.bill_view import BillView
from connectors.http.auth import OrgAccess
from connectors.http.edge import (
    ACK_TIMEOUT_S,
    ApiError,
    ApiRoute,
    await_acks,
    edge_of,
    json_response,
    not_acknowledged,
)
from connectors.http.keys import Scope
from connectors.http.openapi import JSON, ORG_ERRORS, errors, request_body, schema_of
from streams.billing.bills import LifecycleError, transition
from streams.partitioning import partition_for
from streams.schemas.bill import Bill, BillStatus
from streams.schemas.commands import ChangeStatus, RunBills, Tick
from streams.schemas.errors import problems
from streams.settings import Settings

STATUS_WAIT_S = 10.0
STILL_PENDING = {
    "description": f"Accepted; the new version was not seen within {STATUS_WAIT_S:g} s"
}


class BillJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accountIds: list[str] | None = Field(default=None, max_length=10_000)


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: BillStatus


def bills_router(
    settings: Settings, view: BillView, *, access: OrgAccess | None = None
) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, tags=["bills"])
    access = access or OrgAccess(settings)
    may_read = access.requires(Scope.READ)
    may_administer = access.requires(Scope.ADMIN)

    async def send(
        request: Request, key: bytes, value: bytes, partition: int | None = None
    ) -> None:
        edge = edge_of(request)
        delivery = edge.producer.produce(edge.topics.bill_commands, value, key, partition=partition)
        problem = await await_acks([delivery], ACK_TIMEOUT_S)
        if problem is not None:
            raise not_acknowledged("the command", problem)

    @router.post(
        "/organizations/{orgId}/billjobs",
        summary="Run bills now",
        status_code=202,
        responses=errors(*ORG_ERRORS, 503),
        openapi_extra=request_body({JSON: schema_of(BillJob)}, required=False),
    )
    async def bill_job(request: Request, org_id: str = Depends(may_administer)) -> Response:
        """Run bills now for the listed accounts, or for every account."""
        body = await request.body()
        try:
            job = BillJob.model_validate_json(body or b"{}")
        except ValidationError as exc:
            raise invalid(exc) from None
        job_id = f"job_{uuid.uuid4().hex[:16]}"
        now = time.time_ns() // 1_000_000
        if job.accountIds is None:
            await asyncio.gather(
                *(
                    send(
                        request,
                        b"tick",
                        Tick(partition=p, at=now, requestId=job_id).model_dump_json().encode(),
                        p,
                    )
                    for p in range(settings.partitions)
                )
            )
            return json_response({"jobId": job_id, "accounts": "all"}, 202)
        await asyncio.gather(
            *(
                send(
                    request,
                    account.encode(),
                    RunBills(account=account, requestId=job_id).model_dump_json().encode(),
                    partition_for(account, settings.partitions),
                )
                for account in job.accountIds
            )
        )
        return json_response({"jobId": job_id, "accounts": len(job.accountIds)}, 202)

    @router.get(
        "/organizations/{orgId}/bills", summary="Latest bills", responses=errors(*ORG_ERRORS)
    )
    async def list_bills(org_id: str = Depends(may_read), account: str | None = None) -> Response:
        """Latest version of every bill (of one account when `account` is given)."""
        bills = view.bills(account)
        return json_response({"data": [orjson.loads(raw) for raw in bills]})

    @router.get(
        "/organizations/{orgId}/bills/{bill_id}", summary="A bill", responses=errors(*ORG_ERRORS)
    )
    async def get_bill(bill_id: str, org_id: str = Depends(may_read)) -> Response:
        return Response(_known(view, bill_id), media_type="application/json")

    async def change(request: Request, bill_id: str, target: BillStatus) -> Response:
        bill = Bill.model_validate_json(_known(view, bill_id))
        try:
            changed = transition(bill, target, bill.statusChangedAt)
        except LifecycleError as exc:
            raise ApiError(
                409, "conflict", exc.reason, field="status", billStatus=bill.status.value
            ) from None
        if changed is bill:
            return Response(_known(view, bill_id), media_type="application/json")
        command = ChangeStatus(
            account=bill.accountCode,
            billId=bill.id,
            status=target,  # type: ignore[arg-type]
            expectedVersion=bill.version,
        )
        await send(
            request,
            bill.accountCode.encode(),
            command.model_dump_json().encode(),
            partition_for(bill.accountCode, settings.partitions),
        )
        deadline = time.monotonic() + STATUS_WAIT_S
        while time.monotonic() < deadline:
            current = view.bill(bill_id)
            if current is not None and orjson.loads(current)["version"] > bill.version:
                return Response(current, media_type="application/json")
            await asyncio.sleep(0.05)
        return json_response({"billId": bill_id, "status": "accepted"}, 202)

    @router.put(
        "/organizations/{orgId}/bills/{bill_id}/status",
        summary="Approve or lock a bill",
        responses={**errors(*ORG_ERRORS, 409, 503), 202: STILL_PENDING},
        openapi_extra=request_body({JSON: schema_of(StatusChange)}),
    )
    async def put_status(
        bill_id: str, request: Request, org_id: str = Depends(may_administer)
    ) -> Response:
        """Approve (or lock) a bill; 409 with the reason when the lifecycle forbids it."""
        try:
            wanted = StatusChange.model_validate_json(await request.body())
        except ValidationError as exc:
            raise invalid(exc) from None
        if wanted.status == BillStatus.PENDING:
            raise ApiError(
                409,
                "conflict",
                "a bill returns to PENDING only when recalculated",
                field="status",
            )
        return await change(request, bill_id, wanted.status)

    @router.put(
        "/organizations/{orgId}/bills/{bill_id}/lock",
        summary="Lock a bill",
        responses={**errors(*ORG_ERRORS, 409, 503), 202: STILL_PENDING},
    )
    async def put_lock(
        bill_id: str, request: Request, org_id: str = Depends(may_administer)
    ) -> Response:
        """Lock an approved bill: it never changes again; late usage for it is rejected."""
        return await change(request, bill_id, BillStatus.LOCKED)

    return router


def _known(view: BillView, bill_id: str) -> bytes:
    raw = view.bill(bill_id)
    if raw is None:
        raise ApiError(404, "not_found", f"unknown bill {bill_id!r}", field="bill_id")
    return raw


def invalid(exc: ValidationError) -> ApiError:
    """400 naming the field of the first problem (`body` when it is the whole body)."""
    first = problems(exc, whole="body")[0]
    return ApiError(400, "invalid_request", str(first), field=first.field)


__all__: list[Any] = ["bills_router"]
