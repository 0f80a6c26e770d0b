"""The worker's read pages as a contract: their paths, parameters and how both sides read them.

The HTTP edge builds these requests and the worker pages parse them, with the code here.
Every value travels as an encoded query parameter, never as a path segment: an account
code may be anything of 1 to 200 characters (`.`, `..`, `|`, `&`, `#`, `/`, unicode), and
HTTP clients and servers normalize `.`/`..` segments and cut a path at `#` or `?`.
Parsing is strict (each parameter once, nothing unknown), so a value that escaped its
parameter is refused instead of read as another one.

    GET /usage?account=A&start=MS&end=MS&aggregation=C[&aggregation=C...][&groupBy=HOUR|DAY]
    GET /usage-accounts?start=MS&end=MS
    GET /accounts?account=A        GET /accountplans?account=A        GET /bills?account=A
    GET /bill-preview?account=A&at=MS
    GET /balances?account=A
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from streams.clock import DAY_MS
from streams.schemas.measurement import MAX_ID_LENGTH

USAGE = "/usage"
USAGE_ACCOUNTS = "/usage-accounts"
ACCOUNT = "/accounts"
ACCOUNT_PLANS = "/accountplans"
BILLS = "/bills"
BILL_PREVIEW = "/bill-preview"
BALANCES = "/balances"

MAX_RANGE_DAYS = 400  # of a usage query; the worker reads one record per hour of it
MAX_AGGREGATIONS = 100
GroupBy = Literal["HOUR", "DAY"]
Params = list[tuple[str, str]]
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_EPOCH_MS = re.compile(r"-?[0-9]{1,15}")


class BadPageRequest(ValueError):
    """A page request the worker refuses (400): which parameter, and why."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason

    def document(self) -> dict[str, str]:
        return {"error": "bad_request", "field": self.parameter, "reason": self.reason}


def account_params(account: str) -> Params:
    return [("account", account)]


def parse_account(pairs: Iterable[tuple[str, str]]) -> str:
    """The account of an `/accounts`, `/accountplans`, `/bills` or `/balances` request."""
    return _account(_Query(pairs, {"account"}))


@dataclass(frozen=True)
class UsageRequest:
    """Mergeable usage states of one account's aggregations over [start, end) (epoch ms)."""

    account: str
    start: int
    end: int
    aggregations: tuple[str, ...]
    group_by: GroupBy | None = None
    segments: bool = False  # states per segment too (rows carry their segment id)

    def params(self) -> Params:
        params = [("account", self.account), *_range_params(self.start, self.end)]
        params += [("aggregation", code) for code in self.aggregations]
        if self.group_by is not None:
            params.append(("groupBy", self.group_by))
        if self.segments:
            params.append(("segments", "true"))
        return params

    @classmethod
    def parse(cls, pairs: Iterable[tuple[str, str]]) -> UsageRequest:
        query = _Query(pairs, {"account", "start", "end", "aggregation", "groupBy", "segments"})
        start, end = _range(query)
        codes = query.all("aggregation")
        if not 0 < len(codes) <= MAX_AGGREGATIONS:
            raise BadPageRequest("aggregation", f"give 1 to {MAX_AGGREGATIONS} aggregation codes")
        group_by = query.one("groupBy", required=False) or None
        if group_by is not None and group_by not in get_args(GroupBy):
            raise BadPageRequest("groupBy", "must be HOUR or DAY")
        segments = query.one("segments", required=False) or "false"
        if segments not in ("true", "false"):
            raise BadPageRequest("segments", "must be true or false")
        return cls(
            _account(query),
            start,
            end,
            tuple(codes),
            group_by,  # type: ignore[arg-type]
            segments == "true",
        )


@dataclass(frozen=True)
class UsageAccountsRequest:
    """The accounts with usage in [start, end): of every worker of the group, or with
    `local`, of the partitions the worker asked owns (what one worker asks another)."""

    start: int
    end: int
    local: bool = False

    def params(self) -> Params:
        return _range_params(self.start, self.end) + ([("local", "true")] if self.local else [])

    @classmethod
    def parse(cls, pairs: Iterable[tuple[str, str]]) -> UsageAccountsRequest:
        query = _Query(pairs, {"start", "end", "local"})
        local = query.one("local", required=False) or "false"
        if local not in ("true", "false"):
            raise BadPageRequest("local", "must be true or false")
        return cls(*_range(query), local=local == "true")


@dataclass(frozen=True)
class PreviewRequest:
    """The bill `account` would get for the period containing `at` (epoch ms)."""

    account: str
    at: int

    def params(self) -> Params:
        return [("account", self.account), ("at", str(self.at))]

    @classmethod
    def parse(cls, pairs: Iterable[tuple[str, str]]) -> PreviewRequest:
        query = _Query(pairs, {"account", "at"})
        at = _integer(query, "at")
        if not 0 <= at <= LAST_MS:
            raise BadPageRequest("at", "must lie between 1970-01-01 and 9999-12-31 (UTC)")
        return cls(_account(query), at)


class _Query:
    def __init__(self, pairs: Iterable[tuple[str, str]], known: set[str]) -> None:
        self.values: dict[str, list[str]] = {}
        for name, value in pairs:
            if name not in known:
                raise BadPageRequest(name, "unknown parameter")
            self.values.setdefault(name, []).append(value)

    def all(self, name: str) -> list[str]:
        return self.values.get(name, [])

    def one(self, name: str, required: bool = True) -> str:
        values = self.all(name)
        if len(values) > 1:
            raise BadPageRequest(name, "given more than once")
        if not values and required:
            raise BadPageRequest(name, "is required")
        return values[0] if values else ""


def _account(query: _Query) -> str:
    account = query.one("account")
    if not 0 < len(account) <= MAX_ID_LENGTH:
        raise BadPageRequest("account", f"must be 1 to {MAX_ID_LENGTH} characters")
    return account


def _range(query: _Query) -> tuple[int, int]:
    start, end = (_integer(query, name) for name in ("start", "end"))
    if not 0 < end - start <= (MAX_RANGE_DAYS + 1) * DAY_MS:
        raise BadPageRequest("end", f"must be after start, by at most {MAX_RANGE_DAYS} days")
    return start, end


def _range_params(start: int, end: int) -> Params:
    return [("start", str(start)), ("end", str(end))]


def _integer(query: _Query, name: str) -> int:
    text = query.one(name)
    if _EPOCH_MS.fullmatch(text) is None:
        raise BadPageRequest(name, "must be epoch milliseconds (an integer)")
    return int(text)
