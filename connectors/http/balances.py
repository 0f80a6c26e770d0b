"""Balances (credit grants) of an account.

    POST /organizations/{orgId}/balances            (admin scope) a credit grant
    GET  /organizations/{orgId}/balances?account=A  (read scope)  {"data": [Balance, ...]}

POST body: `{"uid", "account", "currency", "amount", "startDate"[, "expiryDate",
"lineItemTypes", "reason", "description"]}` (`streams.schemas.balances`). Every problem of
the body is a 400 naming its field; nothing is published then. A grant is money given
away: only an admin key grants one.

Order of effects of a POST: 1. read and validate the body  2. ask the worker that owns
the account for its grants: the same uid with the same grant answers 200 with the grant
as recorded (nothing is published again), with another grant 409 naming `uid`
3. produce the grant, keyed by the account, to the account's partition  4. await Kafka's
acknowledgement (acks=all)  5. answer 200 with the grant as recorded. If Kafka does not
acknowledge it, 503: a retry with the same `uid` is safe. Two different grants with one
uid sent at the same moment both pass step 2: the worker records the first and
dead-letters the other to `balances.rejected` with the reason.

GET answers each grant with what the account's latest bills consumed of it and what is
left (`remaining`), from the worker that owns the account; 503/502 as every worker read.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

import httpx
import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError

from connectors.http.auth import OrgAccess
from connectors.http.counters import invalid_adjustment
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
from connectors.http.reads import WORKER_TIMEOUT_S, checked
from connectors.http.worker import Worker, read_document
from streams.pages import BALANCES, account_params
from streams.partitioning import partition_for
from streams.schemas.balances import Balance, BalanceGrant, BalanceGrantRequest
from streams.settings import Settings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
GRANT_RETRY = "retrying with the same uid is safe, a uid is recorded once"


def balances_router(
    settings: Settings,
    ack_timeout_s: float = ACK_TIMEOUT_S,
    *,
    timeout_s: float = WORKER_TIMEOUT_S,
    transport: httpx.AsyncBaseTransport | None = None,
    access: OrgAccess | None = None,
) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, tags=["balances"])
    org_access = access or OrgAccess(settings)
    worker = Worker(settings.worker_base_url, timeout_s, transport)

    async def balances_of(account: str) -> list[Balance]:
        async with worker.client() as client:
            answer = await worker.get(
                client, BALANCES, account_params(account), subject=f"account {account!r}"
            )
        return read_document(  # type: ignore[no-any-return]
            answer, lambda doc: [Balance.model_validate(item) for item in doc["data"]]
        )

    @router.post(
        "/organizations/{orgId}/balances",
        summary="Grant an account a credit",
        responses=errors(*ORG_ERRORS, 409, 413, 502, 503),
        openapi_extra=request_body({JSON: schema_of(BalanceGrantRequest)}),
    )
    async def grant_credit(
        request: Request, org_id: str = Depends(org_access.requires(Scope.ADMIN))
    ) -> Response:
        """Give an account money its bills consume (BALANCE_CONSUMED lines)."""
        edge = edge_of(request)
        document = parse_json(await read_body(request, MAX_BODY_BYTES))
        if type(document) is not dict:
            raise ApiError(400, "invalid_request", "the body must be a JSON object", field="body")
        try:
            wanted = BalanceGrantRequest.model_validate(document)
        except ValidationError as exc:
            raise invalid_adjustment(exc, "invalid_credit_grant") from None
        grant = BalanceGrant(**wanted.model_dump(), receivedAt=time.time_ns() // 1_000_000)
        for known in await balances_of(grant.account):
            if known.grant.uid != grant.uid:
                continue
            if not known.grant.same_grant(grant):
                raise ApiError(
                    409,
                    "conflict",
                    f"uid {grant.uid!r} already names another grant to account "
                    f"{grant.account!r}; a uid names one grant",
                    field="uid",
                )
            return json_response(known.grant.model_dump(mode="json", exclude={"source"}))
        delivery = edge.producer.produce(
            edge.topics.balances,
            grant.model_dump_json().encode(),
            key=grant.account.encode(),
            partition=partition_for(grant.account, settings.partitions),
        )
        problem = await await_acks([delivery], ack_timeout_s)
        if problem is not None:
            log.warning("org %s: credit grant %s not acknowledged: %s", org_id, grant.uid, problem)
            raise not_acknowledged("the credit grant", problem, GRANT_RETRY)
        log.info(
            "org %s: credit grant %s accepted: account %s %s %s (%s)",
            org_id,
            grant.uid,
            grant.account,
            grant.amount,
            grant.currency,
            grant.reason,
        )
        return json_response(grant.model_dump(mode="json", exclude={"source"}))

    @router.get(
        "/organizations/{orgId}/balances",
        summary="An account's credit grants and what is left of each",
        responses=errors(*ORG_ERRORS, 502, 503),
    )
    async def list_balances(
        org_id: str = Depends(org_access.requires(Scope.READ)),
        account: Annotated[str | None, Query(description="Account code")] = None,
    ) -> Response:
        """Each grant with `consumed` (by the account's latest bills) and `remaining`."""
        if account is None:
            raise ApiError(400, "bad_request", "account is required", field="account")
        found = await balances_of(checked(account, "account"))
        return json_response({"data": [orjson.loads(b.model_dump_json()) for b in found]})

    return router
