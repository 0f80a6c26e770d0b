"""Usage query API, in the spirit of m3ter's data explorer.

    POST /organizations/{orgId}/usage/query
    {"startDate": ISO-8601, "endDate": ISO-8601,            # on ts; [start, end)
     "accountIds": ["acme", ...],                            # optional
     "aggregations": ["api_calls", ...],
     "timeGroup": "HOUR" | "DAY" | null,                     # optional
     "groupByAccount": true}                                 # default true

The edge asks the worker owning each account (faust routes `/usage/{account}` by the
account's partition) for mergeable hourly states, merges them per requested group and
answers each aggregation's value (exact decimals as strings). Without `accountIds` it
asks the worker at `worker_base_url` which accounts have usage in the range; with
several workers, pass `accountIds` (the listing covers that worker's partitions).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.http.auth import ApiError, ApiRoute, json_response, require_org_key
from streams.schemas.catalog import AggregationFunction
from streams.settings import Settings
from streams.usage import UsageState, from_document, merge_all, value

MAX_ACCOUNTS = 1000
MAX_RANGE_DAYS = 400


class UsageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    startDate: datetime
    endDate: datetime
    accountIds: tuple[str, ...] | None = Field(default=None, max_length=MAX_ACCOUNTS)
    aggregations: tuple[str, ...] = Field(min_length=1, max_length=100)
    timeGroup: Literal["HOUR", "DAY"] | None = None
    groupByAccount: bool = True

    @model_validator(mode="after")
    def _range(self) -> UsageQuery:
        for name in ("startDate", "endDate"):
            if getattr(self, name).tzinfo is None:
                raise ValueError(f"{name} must carry a timezone (e.g. 'Z')")
        if self.endDate <= self.startDate:
            raise ValueError("endDate must be after startDate")
        if (self.endDate - self.startDate).days > MAX_RANGE_DAYS:
            raise ValueError(f"the range may span at most {MAX_RANGE_DAYS} days")
        return self


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def usage_query_router(settings: Settings, *, timeout_s: float = 10.0) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, tags=["usage"])
    authorized_org = require_org_key(settings)
    worker = settings.worker_base_url.rstrip("/")

    @router.post("/organizations/{orgId}/usage/query")
    async def query_usage(request: Request, org_id: str = Depends(authorized_org)) -> Response:
        """Merged usage per aggregation (and per account / time group) over a ts range."""
        try:
            query = UsageQuery.model_validate_json(await request.body())
        except ValidationError as exc:
            errors = [
                {"field": ".".join(map(str, e["loc"])) or "body", "reason": e["msg"]}
                for e in exc.errors()
            ]
            raise ApiError(400, "invalid_query", "the query is not valid", errors=errors) from None
        start, end = epoch_ms(query.startDate), epoch_ms(query.endDate)
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            accounts = list(query.accountIds or await _accounts(client, worker, start, end))
            answers = await asyncio.gather(
                *(_account_states(client, worker, a, query, start, end) for a in accounts)
            )
        return json_response(_merge(query, accounts, answers, start, end))

    return router


async def _get(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    try:
        answer = await client.get(url)
    except httpx.HTTPError as exc:
        raise ApiError(
            503, "unavailable", f"no worker answered: {exc!r}", headers={"Retry-After": "1"}
        ) from None
    if answer.status_code == 503:
        raise ApiError(
            503, "unavailable", "a worker is not ready; retry", headers={"Retry-After": "1"}
        )
    if answer.status_code != 200:
        raise ApiError(
            502, "bad_gateway", f"a worker answered {answer.status_code}: {answer.text[:200]}"
        )
    document: dict[str, Any] = answer.json()
    return document


async def _accounts(client: httpx.AsyncClient, worker: str, start: int, end: int) -> list[str]:
    document = await _get(client, f"{worker}/usage-accounts?start={start}&end={end}")
    return [str(account) for account in document["accounts"]]


async def _account_states(
    client: httpx.AsyncClient, worker: str, account: str, query: UsageQuery, start: int, end: int
) -> dict[str, Any]:
    url = (
        f"{worker}/usage/{quote(account, safe='')}?start={start}&end={end}"
        f"&aggregations={','.join(query.aggregations)}&groupBy={query.timeGroup or ''}"
    )
    return await _get(client, url)


def _merge(
    query: UsageQuery,
    accounts: list[str],
    answers: list[dict[str, Any]],
    start: int,
    end: int,
) -> dict[str, Any]:
    functions: dict[str, str] = {}
    for answer in answers:
        functions.update(answer.get("functions", {}))
    unknown = [code for code in query.aggregations if answers and code not in functions]
    if unknown:
        raise ApiError(
            400,
            "invalid_query",
            f"unknown aggregations: {', '.join(unknown)}",
            errors=[
                {"field": "aggregations", "reason": f"unknown aggregation {c!r}"} for c in unknown
            ],
        )
    groups: dict[tuple[str | None, str, int], list[UsageState]] = {}
    for account, answer in zip(accounts, answers, strict=True):
        owner = account if query.groupByAccount else None
        for part in answer["rows"]:
            key = (owner, part["aggregation"], int(part["bucket"]))
            groups.setdefault(key, []).append(from_document(part["state"]))
    data = []
    for (owner, code, bucket), states in sorted(groups.items(), key=lambda item: str(item[0])):
        merged = merge_all(states)
        amount = value(merged, AggregationFunction(functions[code]))
        row: dict[str, Any] = {
            "aggregation": code,
            "function": functions[code],
            "value": None if amount is None else str(amount),
            "count": merged.count,
        }
        if owner is not None:
            row["accountId"] = owner
        if query.timeGroup:
            row["timestamp"] = iso(bucket)
        data.append(row)
    return {"startDate": iso(start), "endDate": iso(end), "accounts": len(accounts), "data": data}
