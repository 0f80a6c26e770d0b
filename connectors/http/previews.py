"""Bill previews: the bill an account would get, before it is invoiced.

    GET /organizations/{orgId}/bills/preview?account={code}[&at=ISO date or date-time]

`{"data": [Bill, ...]}`: for each account plan active at `at` (default: now), the bill of
its period containing `at` with the usage known now, computed by the worker that owns
the account with the engine of real bills (`streams.billing.preview`). Never stored,
never published to `bills`, never sent to Stripe. `at` is a date (midnight UTC) or a
date-time with a timezone. Answers: 400 naming `account` or `at` and the rule, 404
naming `account` (unknown) or `at` (no priced plan on that date, and why), 503/502 as
every worker read (`connectors.http.worker`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Query, Response

from connectors.http.auth import OrgAccess
from connectors.http.edge import ApiError, ApiRoute
from connectors.http.keys import Scope
from connectors.http.openapi import ORG_ERRORS, errors
from connectors.http.reads import WORKER_TIMEOUT_S, checked
from connectors.http.worker import Worker, read_document
from streams.clock import epoch_ms
from streams.pages import BILL_PREVIEW, PreviewRequest
from streams.settings import Settings

LAST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)


def previews_router(
    settings: Settings,
    *,
    timeout_s: float = WORKER_TIMEOUT_S,
    transport: httpx.AsyncBaseTransport | None = None,
    access: OrgAccess | None = None,
) -> APIRouter:
    """Include it before the bills router: its path would otherwise read as a bill id."""
    router = APIRouter(route_class=ApiRoute, tags=["bills"])
    authorized_org = (access or OrgAccess(settings)).requires(Scope.READ)
    worker = Worker(settings.worker_base_url, timeout_s, transport)

    @router.get(
        "/organizations/{orgId}/bills/preview",
        summary="Preview an account's bill",
        responses=errors(*ORG_ERRORS, 404, 502, 503),
    )
    async def preview_bill(
        org_id: str = Depends(authorized_org),
        account: Annotated[str | None, Query(description="Account code")] = None,
        at: Annotated[
            str | None,
            Query(description="A date or date-time with timezone (default: now)"),
        ] = None,
    ) -> Response:
        """The bill the account would get for the period containing `at`, with the usage
        known now; never stored, published or sent to Stripe."""
        if account is None:
            raise ApiError(400, "bad_request", "account is required", field="account")
        moment = datetime.now(UTC) if at is None else parse_at(at)
        ask = PreviewRequest(checked(account, "account"), epoch_ms(moment))
        async with worker.client() as client:
            answer = await worker.get(
                client, BILL_PREVIEW, ask.params(), subject=f"account {account!r}"
            )
        if answer.status_code == 404:
            missing = read_document(answer, lambda doc: (str(doc["field"]), str(doc["reason"])))
            raise ApiError(404, "not_found", missing[1], field=missing[0])
        return Response(answer.content, media_type="application/json")

    return router


def parse_at(text: str) -> datetime:
    """`text` as a moment: an ISO date (midnight UTC) or an ISO date-time with a timezone,
    in 1970..9999 UTC; 400 naming `at` and the rule otherwise."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise bad_at(f"must be an ISO 8601 date or date-time, got {text[:40]!r}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise bad_at("a date-time must carry a timezone (Z or +hh:mm)")
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not datetime(1970, 1, 1, tzinfo=UTC) <= utc <= LAST:
        raise bad_at("must lie between 1970-01-01 and 9999-12-31 (UTC)")
    return utc


def bad_at(reason: str) -> ApiError:
    return ApiError(400, "bad_request", f"at {reason}", field="at")
