"""Usage query API, in the spirit of m3ter's data explorer.

    POST /organizations/{orgId}/usage/query
    {"startDate": ISO-8601, "endDate": ISO-8601,            # on ts; [start, end)
     "accountIds": ["acme", ...],                            # optional
     "aggregations": ["api_calls", ...],
     "timeGroup": "HOUR" | "DAY" | null,                     # optional
     "groupByAccount": true,                                 # default true
     "groupBySegment": false}                                # default false

The edge asks the worker owning each account (`streams.pages.UsageRequest`, routed by
faust by the account's partition) for mergeable hourly states, merges them per requested
group and answers each aggregation's value (exact decimals as strings). Without
`accountIds` (or with none in it) it asks the worker at `worker_base_url` which accounts
have usage in the range; with several workers, pass `accountIds` (the listing covers that
worker's partitions). A repeated account or aggregation counts once. With
`groupBySegment`, a segmented aggregation answers a row per segment with usage, each with
its `segment` (`{}` the default segment, null for an aggregation without segments);
without it, one row over all its segments.

Bad input is a 400 naming the field before any worker is asked: dates need a timezone
and must lie in 1970..9999 UTC; account ids are 1 to 200 characters of anything (`.`,
`|`, `&`, unicode: they travel as encoded query parameters); aggregation codes follow the
catalog's code pattern.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from connectors.http.auth import OrgAccess
from connectors.http.edge import ApiError, ApiRoute, json_response, read_body
from connectors.http.keys import Scope
from connectors.http.openapi import JSON, ORG_ERRORS, errors, request_body, schema_of
from connectors.http.worker import Worker, bad_gateway, read_document
from streams.pages import (
    MAX_AGGREGATIONS,
    MAX_RANGE_DAYS,
    USAGE,
    USAGE_ACCOUNTS,
    GroupBy,
    UsageAccountsRequest,
    UsageRequest,
)
from streams.schemas.catalog import AggregationFunction, Code
from streams.schemas.errors import problems
from streams.schemas.measurement import MAX_ID_LENGTH
from streams.settings import Settings
from streams.usage.state import UsageState, from_document, merge_all, value

MAX_ACCOUNTS = 1000
MAX_QUERY_BYTES = 1024 * 1024
WORKER_TIMEOUT_S = 10.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LAST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)

AccountId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class UsageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    startDate: AwareDatetime = Field(
        description="Start of the range (inclusive), on ts", examples=["2026-03-01T00:00:00Z"]
    )
    endDate: AwareDatetime = Field(
        description=f"End of the range (exclusive), at most {MAX_RANGE_DAYS} days after start",
        examples=["2026-04-01T00:00:00Z"],
    )
    accountIds: tuple[AccountId, ...] | None = Field(
        default=None,
        max_length=MAX_ACCOUNTS,
        description="Accounts to query; all accounts with usage in the range when omitted or empty",
        examples=[["acme", "cus_Nk3p0sWk2"]],
    )
    aggregations: tuple[Code, ...] = Field(
        min_length=1,
        max_length=MAX_AGGREGATIONS,
        description="Codes of catalog aggregations",
        examples=[["api_calls", "active_users"]],
    )
    timeGroup: GroupBy | None = None
    groupByAccount: bool = True
    groupBySegment: bool = Field(
        default=False,
        description="One row per segment of a segmented aggregation, with its `segment` "
        "({} the default segment; null for an aggregation without segments)",
    )

    @field_validator("startDate", "endDate")
    @classmethod
    def _representable(cls, moment: datetime) -> datetime:
        try:
            utc = moment.astimezone(UTC)
        except OverflowError:
            utc = None
        if utc is None or not EPOCH <= utc <= LAST:
            raise ValueError(f"must lie between {iso_of(EPOCH)} and {iso_of(LAST)}")
        return moment

    @field_validator("endDate")
    @classmethod
    def _after_start(cls, end: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("startDate")
        if start is None:  # refused on its own already
            return end
        # usage is kept to the millisecond: a range shorter than that is empty
        if epoch_ms(end) <= epoch_ms(start):
            raise ValueError("endDate must be after startDate, by at least a millisecond")
        if (end - start).days > MAX_RANGE_DAYS:
            raise ValueError(f"the range may span at most {MAX_RANGE_DAYS} days")
        return end

    @field_validator("accountIds", "aggregations")
    @classmethod
    def _distinct(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if values is None else tuple(dict.fromkeys(values))


def epoch_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def iso(ms: int) -> str:
    return iso_of(EPOCH + timedelta(milliseconds=ms))


def iso_of(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_query(body: bytes) -> UsageQuery:
    """The query, or ApiError 400 naming every field at fault (`body` for the whole)."""
    try:
        return UsageQuery.model_validate_json(body)
    except ValidationError as exc:
        found = problems(exc, whole="body", plain=True)  # `accountIds.3`; `body` as a whole
    raise ApiError(
        400,
        "invalid_query",
        f"the query is not valid: {'; '.join(map(str, found[:5]))}",
        field=found[0].field,
        errors=[problem.as_dict() for problem in found],
    )


def usage_query_router(
    settings: Settings,
    *,
    timeout_s: float = WORKER_TIMEOUT_S,
    transport: httpx.AsyncBaseTransport | None = None,
    access: OrgAccess | None = None,
) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, tags=["usage"])
    authorized_org = (access or OrgAccess(settings)).requires(Scope.READ)
    worker = Worker(settings.worker_base_url, timeout_s, transport)

    @router.post(
        "/organizations/{orgId}/usage/query",
        summary="Query usage",
        responses=errors(*ORG_ERRORS, 413, 502, 503),
        openapi_extra=request_body({JSON: schema_of(UsageQuery)}),
    )
    async def query_usage(request: Request, org_id: str = Depends(authorized_org)) -> Response:
        """Merged usage per aggregation (and per account / time group) over a ts range."""
        query = parse_query(await read_body(request, MAX_QUERY_BYTES))
        start, end = epoch_ms(query.startDate), epoch_ms(query.endDate)
        async with worker.client() as client:
            if query.accountIds:
                accounts = list(query.accountIds)
            else:
                accounts = await _accounts(worker, client, start, end)
            answers = await asyncio.gather(
                *(_account_states(worker, client, a, query, start, end) for a in accounts)
            )
        return json_response(_merge(query, accounts, answers, start, end))

    return router


@dataclass(frozen=True)
class AccountStates:
    """A worker's answer for one account: aggregation functions, states per bucket."""

    functions: dict[str, AggregationFunction]
    rows: list[tuple[str, str, int, UsageState]]  # (aggregation, segment id, bucket, state)

    @classmethod
    def of(cls, document: dict[str, Any]) -> AccountStates:
        rows = [
            (
                str(row["aggregation"]),
                _segment(row.get("segment", "")),
                _bucket(row["bucket"]),
                from_document(row["state"]),
            )
            for row in document["rows"]
        ]
        functions = {
            str(code): AggregationFunction(name) for code, name in document["functions"].items()
        }
        return cls(functions, rows)


def _bucket(raw: Any) -> int:
    if type(raw) is not int or not 0 <= raw <= epoch_ms(LAST):
        raise ValueError(f"bucket {raw!r} is not epoch milliseconds")
    return raw


def _segment(raw: Any) -> str:
    """A segment id as the worker wrote it: "" (unsegmented) or a JSON object of strings."""
    if raw == "":
        return ""
    parsed = orjson.loads(raw) if isinstance(raw, str) else None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise ValueError(f"segment {raw!r} is not a segment id")
    return str(raw)


def _account_list(document: dict[str, Any]) -> list[str]:
    accounts = document["accounts"]
    if not all(isinstance(account, str) and account for account in accounts):
        raise ValueError("accounts must be non-empty strings")
    return list(accounts)


async def _accounts(worker: Worker, client: httpx.AsyncClient, start: int, end: int) -> list[str]:
    params = UsageAccountsRequest(start, end).params()
    answer = await worker.get(client, USAGE_ACCOUNTS, params, subject="the usage listing")
    if answer.status_code != 200:
        raise bad_gateway(f"the worker answered {answer.status_code} for the usage listing")
    accounts: list[str] = read_document(answer, _account_list)
    return accounts


async def _account_states(
    worker: Worker,
    client: httpx.AsyncClient,
    account: str,
    query: UsageQuery,
    start: int,
    end: int,
) -> AccountStates:
    ask = UsageRequest(
        account, start, end, query.aggregations, query.timeGroup, query.groupBySegment
    )
    subject = f"the usage of account {account!r}"
    answer = await worker.get(client, USAGE, ask.params(), subject=subject)
    if answer.status_code != 200:
        raise bad_gateway(f"the worker answered {answer.status_code} for {subject}")
    states: AccountStates = read_document(answer, AccountStates.of)
    return states


def _merge(
    query: UsageQuery,
    accounts: list[str],
    answers: list[AccountStates],
    start: int,
    end: int,
) -> dict[str, Any]:
    functions: dict[str, AggregationFunction] = {}
    for answer in answers:
        functions.update(answer.functions)
    unknown = [code for code in query.aggregations if answers and code not in functions]
    if unknown:
        raise ApiError(
            400,
            "invalid_query",
            f"unknown aggregations: {', '.join(unknown)}",
            field="aggregations",
            errors=[
                {"field": "aggregations", "reason": f"unknown aggregation {c!r}"} for c in unknown
            ],
        )
    groups: dict[tuple[str | None, str, str, int], list[UsageState]] = {}
    for account, answer in zip(accounts, answers, strict=True):
        owner = account if query.groupByAccount else None
        for code, segment, bucket, state in answer.rows:
            if code in functions:
                groups.setdefault((owner, code, segment, bucket), []).append(state)
    data = []
    ordered = sorted(groups.items(), key=lambda item: str(item[0]))
    for (owner, code, segment, bucket), states in ordered:
        merged = merge_all(states)
        amount = value(merged, functions[code])
        row: dict[str, Any] = {
            "aggregation": code,
            "function": functions[code].value,
            "value": None if amount is None else str(amount),
            "count": merged.count,
        }
        if owner is not None:
            row["accountId"] = owner
        if query.groupBySegment:
            row["segment"] = orjson.loads(segment) if segment else None
        if query.timeGroup:
            row["timestamp"] = iso(bucket)
        data.append(row)
    return {"startDate": iso(start), "endDate": iso(end), "accounts": len(accounts), "data": data}
