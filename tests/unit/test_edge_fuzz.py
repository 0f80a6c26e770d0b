"""A schema-driven fuzzer of the HTTP edge: requests generated from the app's own OpenAPI
document, sent to the real app in-process (the worker and Kafka stood in by
`tests.unit.edge_stubs`).

For every operation the document declares, hypothesis builds requests from its
parameters and request body schemas: values that follow the schema, values that break
it at some node (another JSON type, a missing or unknown property), awkward strings
(`.`, `..`, `|`, `&`, `#`, NUL, unicode, 200 and 201 characters), dates from year 1 to
9999 with any offset, raw bytes. The edge must:
- never answer 5xx, except the documented 503 (with Retry-After) when no worker answered;
- answer only statuses the operation documents;
- name the field, parameter or header at fault in every 4xx body (`field`, or `field` in
  each of `errors`);
- ask the worker for exactly the accounts and aggregations a usage query gave.

Credentials are not fuzzed much (a valid API key and the deployment's org id most of
the time, a valid Stripe signature of the body most of the time), so the requests reach
the handlers. A path parameter never holds "/" or is empty: that selects another route.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, note
from hypothesis import settings as budget
from hypothesis import strategies as st
from pydantic import SecretStr

from streams import pages
from streams.settings import Settings
from tests.unit.edge_stubs import StubWorker, edge_app

ORG = "fuzz-org"
KEY = "fuzz-key"
SECRET = "whsec_fuzz"
SETTINGS = Settings(
    org_id=ORG,
    api_keys=(SecretStr(KEY),),
    topic_prefix="fuzz.",
    stripe_webhook_secrets=(SecretStr(SECRET),),
    stripe_webhook_tolerance_s=300,
)
USAGE_QUERY = ("post", "/organizations/{orgId}/usage/query")
# Examples per operation: enough to find what the first run of this fuzzer found
# (3,751 requests in all then), small enough for well under a minute.
USAGE_QUERY_EXAMPLES = 800
OTHER_EXAMPLES = 80
# No input, or they read a real broker (each request would wait for its timeouts).
NOT_FUZZED = {
    "/healthz",
    "/metrics",
    "/organizations/{orgId}/health",
    "/organizations/{orgId}/deadletters",
}

AWKWARD = (
    "",
    ".",
    "..",
    " ",
    "|",
    "a|b",
    "a/b",
    "&",
    "a&aggregation=api_calls",
    "#",
    "x#y",
    "?",
    "?start=0",
    "%",
    "%2E",
    "%00",
    "+",
    "\x00",
    "\t",
    "\n",
    "\u00a0",
    "Zürich",
    "東京",
    "🙂",
    "a" * 200,
    "é" * 200,
    "a" * 201,
    "null",
    "0",
    "-1",
    "1e999",
    "NaN",
)
STRANGE_MOMENTS = (
    "0001-01-01T00:00:00+09:22",
    "9999-12-31T23:59:59-14:00",
    "1969-12-31T23:59:59.999Z",
    "1970-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-03-01",
    "2026-03-01T00:00:00",
    "now",
)
NASTY_JSON = (b"", b"{", b"[]", b"null", b'{"x": "\\ud800"}', b"[" * 5000, b'{"a":' * 5000)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(AWKWARD),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
NEAR = st.datetimes(datetime(2026, 2, 27), datetime(2026, 3, 3), timezones=OFFSETS | st.just(UTC))
ANY_YEAR = st.datetimes(timezones=st.none() | OFFSETS)
# The first and last days datetime can hold: an offset moves them out of its range.
EXTREME = st.datetimes(datetime(1, 1, 1), datetime(1, 1, 3), timezones=OFFSETS) | st.datetimes(
    datetime(9999, 12, 29), datetime(9999, 12, 31, 23, 59, 59), timezones=OFFSETS
)
# Mostly near the usage the stand-in worker holds (so two of them make a valid range).
MOMENTS = st.one_of(
    NEAR.map(datetime.isoformat),
    NEAR.map(datetime.isoformat),
    NEAR.map(datetime.isoformat),
    EXTREME.map(datetime.isoformat),
    ANY_YEAR.map(datetime.isoformat),
    st.sampled_from(STRANGE_MOMENTS),
)
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"

    __repr__ = __str__

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)


@dataclass
class Call:
    operation: Operation
    url: str
    headers: dict[str, str]
    content: bytes | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    json_body: Any = None


DOCUMENT = edge_app(SETTINGS, StubWorker()).openapi()
OPERATIONS = [
    Operation(method, path, spec)
    for path, item in DOCUMENT["paths"].items()
    if path not in NOT_FUZZED
    for method, spec in item.items()
]


# --- strategies from JSON schema -------------------------------------------------------


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    reference = schema.get("$ref")
    if reference is None:
        return schema
    node: Any = DOCUMENT
    for part in reference.removeprefix("#/").split("/"):
        node = node[part]
    return resolve(node)


def values(schema: dict[str, Any], broken: bool) -> st.SearchStrategy[Any]:
    """Values of `schema`; when `broken`, about one node in ten breaks it."""
    conforming = _conforming(resolve(schema), broken)
    if not broken:
        return conforming
    return st.integers(0, 9).flatmap(lambda roll: JSON_VALUES if roll == 0 else conforming)


def _conforming(schema: dict[str, Any], broken: bool) -> st.SearchStrategy[Any]:
    examples = st.sampled_from(schema["examples"]) if schema.get("examples") else st.nothing()
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return examples | st.one_of([values(option, broken) for option in schema[key]])
    if "allOf" in schema:
        return values(schema["allOf"][0], broken)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([_conforming({**schema, "type": each}, broken) for each in kind])
    maker = {
        "string": _strings,
        "integer": _integers,
        "number": _numbers,
        "boolean": lambda s, b: st.booleans(),
        "null": lambda s, b: st.none(),
        "array": _arrays,
        "object": _objects,
    }.get(kind or "")
    return examples | (maker(schema, broken) if maker else JSON_VALUES)


def _strings(schema: dict[str, Any], broken: bool) -> st.SearchStrategy[Any]:
    if schema.get("format") == "date-time":
        return MOMENTS
    if "pattern" in schema:
        base = st.from_regex(schema["pattern"], fullmatch=True)
    else:
        low = schema.get("minLength", 0)
        base = st.text(min_size=low, max_size=max(low, min(schema.get("maxLength", 30), 30)))
    return base | st.sampled_from(AWKWARD)


def _integers(schema: dict[str, Any], broken: bool) -> st.SearchStrategy[Any]:
    bounded = st.integers(schema.get("minimum"), schema.get("maximum"))
    return bounded | st.sampled_from([0, -1, 2**63, -(10**30)])


def _numbers(schema: dict[str, Any], broken: bool) -> st.SearchStrategy[Any]:
    return _integers(schema, broken) | st.floats(allow_nan=False, allow_infinity=False)


def _arrays(schema: dict[str, Any], broken: bool) -> st.SearchStrategy[Any]:
    low = schema.get("minItems", 0)
    high = min(schema.get("maxItems", low + 4), low + 4)
    return st.lists(values(schema.get("items", {}), broken), min_size=low, max_size=high)


def _objects(schema: dict[str, Any], broken: bool) -> st.SearchStrategy[Any]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", ())) & properties.keys()
    objects = st.fixed_dictionaries(
        {name: values(properties[name], broken) for name in sorted(required)},
        optional={
            name: values(each, broken) for name, each in properties.items() if name not in required
        },
    )
    more = schema.get("additionalProperties")
    if isinstance(more, dict):
        extra = st.dictionaries(st.text(max_size=10), values(more, broken), max_size=3)
        objects = st.builds(lambda known, extra: {**extra, **known}, objects, extra)
    if broken:
        objects = objects.flatmap(_without_a_property) | st.builds(
            lambda known, name, value: {**known, name: value},
            objects,
            st.text(max_size=10),
            JSON_VALUES,
        )
    return objects


def _without_a_property(document: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    if not document:
        return st.just(document)
    return st.sampled_from(sorted(document)).map(
        lambda gone: {k: v for k, v in document.items() if k != gone}
    )


# --- requests from operations ----------------------------------------------------------


def segment(value: str) -> str:
    """A path segment holding `value` exactly (clients drop "." and ".." segments)."""
    return quote(value, safe="").replace(".", "%2E")


def signed(body: bytes, at: int) -> str:
    digest = hmac.new(SECRET.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


@st.composite
def calls(draw: st.DrawFn, operation: Operation) -> Call:
    broken = draw(st.booleans())
    parameters = [resolve(p) for p in operation.spec.get("parameters", [])]
    path, query, headers = operation.path, {}, {}
    for parameter in parameters:
        name, schema = parameter["name"], parameter.get("schema", {})
        if parameter["in"] == "path":
            value = ORG if name == "orgId" and draw(st.integers(0, 9)) else None
            if value is None:
                value = str(draw(values(schema, False))).replace("/", "") or "x"
            path = path.replace("{" + name + "}", segment(value))
        elif parameter["in"] == "query":
            if parameter.get("required") or draw(st.booleans()):
                query[name] = str(draw(values(schema, broken)))
        elif parameter["in"] == "header" and name != "Stripe-Signature":
            headers[name] = draw(HEADER_TEXT)
    if path.startswith("/organizations/"):
        headers["Authorization"] = draw(
            st.sampled_from([f"Bearer {KEY}"] * 18 + ["Bearer wrong", "Basic x"])
        )
    call = Call(operation, path + (f"?{httpx.QueryParams(query)}" if query else ""), headers)
    body = operation.spec.get("requestBody")
    if body is not None and (body.get("required") or draw(st.booleans())):
        draw_body(draw, call, body["content"], broken)
    if any(p["in"] == "header" and p["name"] == "Stripe-Signature" for p in parameters):
        content = call.content or b""
        now = int(time.time())
        call.headers["Stripe-Signature"] = draw(
            st.sampled_from([signed(content, now)] * 6 + [signed(content, now + 3600)])
            | st.builds(signed, st.just(content), st.integers(0, 2**40))
            | HEADER_TEXT
        )
    return call


def draw_body(draw: st.DrawFn, call: Call, content: dict[str, Any], broken: bool) -> None:
    kind = draw(st.sampled_from(sorted(content)))
    schema = resolve(content[kind].get("schema", {}))
    call.headers["Content-Type"] = draw(
        st.sampled_from([kind] * 9 + ["text/plain", "application/xml", "multipart/form-data"])
    )
    if kind == "multipart/form-data":
        inner = draw(st.sampled_from(sorted(k for k in content if k != kind) or ["text/csv"]))
        name = draw(st.sampled_from(["m.json", "m.jsonl", "m.csv", "m.txt", ""]))
        file_bytes = encode(
            draw, inner, resolve(content.get(inner, {}).get("schema", {})), content, broken
        )
        call.files = {"file": (name, file_bytes, inner)}
        del call.headers["Content-Type"]  # httpx writes it, with the boundary
        return
    call.content = encode(draw, kind, schema, content, broken)


def encode(
    draw: st.DrawFn, kind: str, schema: dict[str, Any], content: dict[str, Any], broken: bool
) -> bytes:
    roll = draw(st.integers(0, 19))
    if roll == 0:
        return draw(st.binary(max_size=64))
    if roll == 1 and "json" in kind:
        return draw(st.sampled_from(NASTY_JSON))
    if schema.get("type") != "string":
        value = draw(values(schema, broken))
        return json.dumps(value, ensure_ascii=draw(st.booleans())).encode()
    items = _record_schema(content)
    if "csv" in kind:
        return draw(csv_text(items, broken)).encode()
    if "json" in kind:
        lines = draw(st.lists(values(items, broken), max_size=4))
        return "\n".join(json.dumps(line) for line in lines).encode()
    return draw(st.text(max_size=60)).encode()


def _record_schema(content: dict[str, Any]) -> dict[str, Any]:
    """The schema of one record of a file body: the items of the JSON array form."""
    for each in content.values():
        schema = resolve(each.get("schema", {}))
        for option in [schema, *schema.get("anyOf", ())]:
            if option.get("type") == "array":
                return resolve(option.get("items", {}))
    return {}


@st.composite
def csv_text(draw: st.DrawFn, record: dict[str, Any], broken: bool) -> str:
    """A CSV file: a header row of the record's fields (`map.key` for maps), then rows."""
    columns = [
        f"{name}.{draw(st.sampled_from(['calls', 'user', 'x']))}"
        if resolve(each).get("type") == "object"
        else name
        for name, each in record.get("properties", {}).items()
    ]
    header = draw(st.lists(st.sampled_from(columns or ["x"]), min_size=1, unique=True))
    cells = st.one_of(
        st.text(max_size=10), st.sampled_from(AWKWARD), MOMENTS, st.integers().map(str)
    )
    rows = draw(st.lists(st.lists(cells, min_size=len(header), max_size=len(header)), max_size=4))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


# --- what every answer must be ---------------------------------------------------------


def names_a_field(body: Any) -> bool:
    """`field` holds the name (a property may be named "", so "" is a name too), or each
    of `errors` has one."""
    if not isinstance(body, dict):
        return False
    if isinstance(body.get("field"), str):
        return True
    problems = body.get("errors")
    return (
        isinstance(problems, list)
        and bool(problems)
        and all(isinstance(p, dict) and isinstance(p.get("field"), str) for p in problems)
    )


def check(call: Call, response: httpx.Response, worker: StubWorker) -> None:
    status = response.status_code
    note(f"{status} {response.text[:500]}")
    event(f"{status}")
    assert str(status) in call.operation.spec["responses"], f"{status} is not documented"
    if status >= 500:
        assert status == 503 and worker.refused, f"{status} though the worker answered"
        assert response.headers.get("retry-after"), "a 503 without Retry-After"
    elif status >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str)
        assert names_a_field(body), "a 4xx that names no field"
    elif call.operation.key == USAGE_QUERY and isinstance(call.json_body, dict):
        asked = [ask for page, ask in worker.asked if page == pages.USAGE]
        given_ids = call.json_body.get("accountIds")
        if given_ids:  # else every account the worker lists
            assert [ask.account for ask in asked] == list(dict.fromkeys(given_ids))
        codes = list(dict.fromkeys(call.json_body["aggregations"]))
        assert all(list(ask.aggregations) == codes for ask in asked)


def fuzz_worker() -> StubWorker:
    """A worker with usage and accounts for awkward codes."""
    worker = StubWorker()
    at = int(datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp() * 1000)
    for account in ("acme", ".", "a|b", "Zürich", "a" * 200):
        worker.add_usage(account, "api_calls", at, 3)
        worker.accounts[account] = {"code": account}
    return worker


WORKER = fuzz_worker()
APP = edge_app(SETTINGS, WORKER)


async def send(call: Call) -> httpx.Response:
    transport = httpx.ASGITransport(app=APP)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        return await client.request(
            call.operation.method.upper(),
            call.url,
            headers=call.headers,
            content=call.content,
            files=call.files,
        )


def fuzz(operation: Operation, data: st.DataObject) -> None:
    call = data.draw(calls(operation))
    try:
        call.json_body = json.loads(call.content or b"")
    except (ValueError, RecursionError):
        call.json_body = None
    WORKER.down = data.draw(st.integers(0, 9)) == 0
    WORKER.asked.clear()
    WORKER.refused = 0
    note(f"{call.url} {call.headers} {call.content!r:.2000} {call.files!r:.500}")
    note(f"worker down: {WORKER.down}")
    response = asyncio.run(send(call))
    check(call, response, WORKER)


def fuzzing(examples: int) -> budget:
    return budget(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )


@pytest.mark.parametrize("operation", [op for op in OPERATIONS if op.key != USAGE_QUERY], ids=str)
@fuzzing(OTHER_EXAMPLES)
@given(data=st.data())
def test_every_operation_answers_generated_requests_as_its_schema_documents(
    operation: Operation, data: st.DataObject
) -> None:
    fuzz(operation, data)


@fuzzing(USAGE_QUERY_EXAMPLES)
@given(data=st.data())
def test_the_usage_query_answers_generated_requests_as_its_schema_documents(
    data: st.DataObject,
) -> None:
    [usage_query] = [op for op in OPERATIONS if op.key == USAGE_QUERY]
    fuzz(usage_query, data)
