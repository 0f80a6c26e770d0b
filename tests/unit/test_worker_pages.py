"""The worker pages' request contract (`streams.pages`): what the edge sends is what the
worker reads, for any account code, and anything else is refused naming the parameter."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from streams import pages
from streams.clock import DAY_MS
from streams.schemas.catalog import CODE_PATTERN

ACCOUNTS = st.text(min_size=1, max_size=200) | st.sampled_from([".", "..", "a|b", "&", "#", "%2E"])
CODES = st.from_regex(CODE_PATTERN, fullmatch=True)


def as_the_worker_reads(params: pages.Params) -> list[tuple[str, str]]:
    """Encode as the edge does (httpx), decode as the worker's web server does (aiohttp/yarl)."""
    raw = httpx.URL("http://worker/usage", params=tuple(params)).raw_path.decode("ascii")
    return list(URL(raw, encoded=True).query.items())


@given(
    account=ACCOUNTS,
    start=st.integers(0, 2**44),
    length=st.integers(1, pages.MAX_RANGE_DAYS * DAY_MS),
    codes=st.lists(CODES, min_size=1, max_size=5).map(tuple),
    group_by=st.sampled_from([None, "HOUR", "DAY"]),
)
def test_a_usage_request_reaches_the_worker_exactly_whatever_the_account_code(
    account: str, start: int, length: int, codes: tuple[str, ...], group_by: pages.GroupBy | None
) -> None:
    sent = pages.UsageRequest(account, start, start + length, codes, group_by)
    assert pages.UsageRequest.parse(as_the_worker_reads(sent.params())) == sent


@given(account=ACCOUNTS)
def test_an_account_request_reaches_the_worker_exactly(account: str) -> None:
    assert pages.parse_account(as_the_worker_reads(pages.account_params(account))) == account


VALID = [("account", "acme"), ("start", "0"), ("end", "3600000"), ("aggregation", "api_calls")]


@pytest.mark.parametrize(
    ("pairs", "parameter"),
    [
        ([*VALID, ("aggregations", "x")], "aggregations"),  # unknown
        ([*VALID, ("account", "other")], "account"),  # twice
        ([p for p in VALID if p[0] != "account"], "account"),
        ([("account", ""), *VALID[1:]], "account"),
        ([("account", "a" * 201), *VALID[1:]], "account"),
        ([p for p in VALID if p[0] != "aggregation"], "aggregation"),
        ([*VALID, ("groupBy", "WEEK")], "groupBy"),
        ([VALID[0], ("start", "--5"), *VALID[2:]], "start"),
        ([VALID[0], ("start", "1e3"), *VALID[2:]], "start"),
        ([*VALID[:2], ("end", "0"), VALID[3]], "end"),
        ([*VALID[:2], ("end", str(402 * DAY_MS)), VALID[3]], "end"),
    ],
)
def test_a_usage_request_the_worker_cannot_read_is_refused_naming_the_parameter(
    pairs: list[tuple[str, str]], parameter: str
) -> None:
    with pytest.raises(pages.BadPageRequest) as refused:
        pages.UsageRequest.parse(pairs)
    assert refused.value.parameter == parameter
    assert refused.value.document()["field"] == parameter
