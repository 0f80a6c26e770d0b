"""Read API for accounts: the current Account and Account Plans, as the workers hold them.

    GET /organizations/{orgId}/accounts/{code}            -> the Account
    GET /organizations/{orgId}/accountplans?account={code} -> {"data": [Account Plan, ...]}

The edge keeps no state: it asks a worker (`settings.worker_base_url`), and faust's table
routing forwards the request to the worker that owns the account's partition
(`streams.agents.accounts` pages). Answers: 200 with the state (m3ter's field names,
camelCase), 404 for an unknown account, 503 with Retry-After when no worker answers or
the owner is not ready (rebalancing, recovering its tables: `streams.readiness`), 502 when
a worker answers with an error. Bearer API key and org check
from `connectors.http.auth`.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Depends, Query, Response

from connectors.http.auth import ApiError, ApiRoute, require_org_key
from streams.settings import Settings

WORKER_TIMEOUT_S = 5.0


def reads_router(settings: Settings, *, timeout_s: float = WORKER_TIMEOUT_S) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, tags=["accounts"])
    authorized_org = require_org_key(settings)
    worker = settings.worker_base_url.rstrip("/")

    # `= Depends(...)`, not `Annotated[...]`: with postponed annotations FastAPI cannot
    # resolve a dependency that is a local of this function.
    @router.get("/organizations/{orgId}/accounts/{code}")
    async def get_account(code: str, org_id: str = Depends(authorized_org)) -> Response:
        """The account with this code (the Stripe customer id for Stripe accounts)."""
        return await from_worker(worker, "accounts", code, timeout_s)

    @router.get("/organizations/{orgId}/accountplans")
    async def list_account_plans(
        org_id: str = Depends(authorized_org),
        account: Annotated[str | None, Query(description="Account code")] = None,
    ) -> Response:
        """Every account plan of one account (current and ended), oldest first."""
        if not account:
            raise ApiError(
                400,
                "bad_request",
                "query parameter 'account' is required: account plans are listed per account",
                field="account",
            )
        return await from_worker(worker, "accountplans", account, timeout_s)

    return router


async def from_worker(worker: str, page: str, code: str, timeout_s: float) -> Response:
    """GET `<worker>/<page>/<code>` and pass the JSON through, or raise ApiError."""
    url = f"{worker}/{page}/{quote(code, safe='')}"
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            answer = await client.get(url)
    except httpx.TimeoutException:
        raise unavailable(f"no worker answered at {worker} within {timeout_s} s") from None
    except httpx.HTTPError as exc:
        raise unavailable(f"no worker answered at {worker}: {exc!r}") from None
    if answer.status_code == 200:
        return Response(answer.content, media_type="application/json")
    if answer.status_code == 404:
        raise ApiError(404, "not_found", f"account {code!r} not found")
    if answer.status_code == 503:
        raise unavailable(
            f"the worker owning account {code!r} is not ready (rebalancing or recovering "
            "its tables); retry"
        )
    raise ApiError(
        502,
        "bad_gateway",
        f"the worker answered {answer.status_code}: {answer.text[:200]}",
    )


def unavailable(message: str) -> ApiError:
    return ApiError(503, "unavailable", message, headers={"Retry-After": "1"})
