"""Read API for accounts: the current Account and Account Plans, as the workers hold them.

    GET /organizations/{orgId}/accounts/{code}            -> the Account (a code of "."
                                                             or ".." sent as %2E)
    GET /organizations/{orgId}/accountplans?account={code} -> {"data": [Account Plan, ...]}

The edge keeps no state: it asks a worker (`connectors.http.worker`), and faust's table
routing forwards the request to the worker that owns the account's partition
(`streams.agents.accounts` pages; the code travels as a query parameter, so `.`, `..`,
`/` or `#` in a code reach the worker as they are). Answers: 200 with the state (m3ter's
field names, camelCase), 404 for an unknown account, 400 for a code that cannot be one
(empty, longer than 200 characters), 503 when no worker answers (or the owner is
rebalancing), 502 when a worker answers with an error. Bearer API key and org check
from `connectors.http.auth`.
"""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Path, Query, Response
from starlette.convertors import Convertor, register_url_convertor

from connectors.http.auth import OrgAccess
from connectors.http.edge import ApiError, ApiRoute
from connectors.http.keys import Scope
from connectors.http.openapi import ORG_ERRORS, errors
from connectors.http.worker import Worker
from streams.pages import ACCOUNT, ACCOUNT_PLANS, account_params
from streams.schemas.measurement import MAX_ID_LENGTH
from streams.settings import Settings

WORKER_TIMEOUT_S = 5.0
READ_ERRORS = errors(*ORG_ERRORS, 502, 503)


class AccountCode(Convertor[str]):
    """A path segment that is an account code: anything, `/` and line breaks included
    (starlette's `path` stops at a line break)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def reads_router(
    settings: Settings,
    *,
    timeout_s: float = WORKER_TIMEOUT_S,
    transport: httpx.AsyncBaseTransport | None = None,
    access: OrgAccess | None = None,
) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, tags=["accounts"])
    authorized_org = (access or OrgAccess(settings)).requires(Scope.READ)
    worker = Worker(settings.worker_base_url, timeout_s, transport)

    # `= Depends(...)`, not `Annotated[...]`: with postponed annotations FastAPI cannot
    # resolve a dependency that is a local of this function. `{code:account}`: a code may
    # hold a `/` (sent as %2F) or a line break.
    register_url_convertor("account", AccountCode())

    @router.get(
        "/organizations/{orgId}/accounts/{code:account}",
        summary="An account",
        responses=READ_ERRORS,
    )
    async def get_account(
        code: Annotated[str, Path(description="Account code")],
        org_id: str = Depends(authorized_org),
    ) -> Response:
        """The account with this code (the Stripe customer id for Stripe accounts)."""
        return await from_worker(worker, ACCOUNT, checked(code, "code"), "code")

    @router.get(
        "/organizations/{orgId}/accountplans", summary="An account's plans", responses=READ_ERRORS
    )
    async def list_account_plans(
        org_id: str = Depends(authorized_org),
        account: Annotated[str | None, Query(description="Account code")] = None,
    ) -> Response:
        """Every account plan of one account (current and ended), oldest first."""
        if account is None:
            raise ApiError(
                400,
                "bad_request",
                "query parameter 'account' is required: account plans are listed per account",
                field="account",
            )
        return await from_worker(worker, ACCOUNT_PLANS, checked(account, "account"), "account")

    return router


def checked(code: str, field: str) -> str:
    """`code` if it can be an account code (1 to 200 characters); 400 naming `field` if not."""
    if not 0 < len(code) <= MAX_ID_LENGTH:
        raise ApiError(
            400,
            "bad_request",
            f"{field} must be an account code of 1 to {MAX_ID_LENGTH} characters",
            field=field,
        )
    return code


async def from_worker(worker: Worker, page: str, code: str, field: str) -> Response:
    """The worker's JSON for account `code` on `page`, passed through; or raise ApiError
    (404 naming `field`, the parameter that held the code)."""
    async with worker.client() as client:
        answer = await worker.get(client, page, account_params(code), subject=f"account {code!r}")
    if answer.status_code == 404:
        raise ApiError(404, "not_found", f"account {code!r} not found", field=field)
    return Response(answer.content, media_type="application/json")
