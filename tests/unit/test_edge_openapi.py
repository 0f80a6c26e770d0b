"""The edge's OpenAPI document declares what the edge reads and answers, and FastAPI's
own parameter errors come out as our 400 naming the parameter."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import Query
from pydantic import SecretStr

from streams.settings import Settings
from tests.unit.edge_stubs import StubWorker, edge_app

SETTINGS = Settings(org_id="org-1", api_keys=(SecretStr("key-1"),), topic_prefix="unit.")
BODIES = {
    ("post", "/webhooks/stripe"): {"application/json"},
    ("post", "/organizations/{orgId}/measurements"): {"application/json"},
    ("post", "/organizations/{orgId}/fileuploads/measurements"): {
        "application/json",
        "application/x-ndjson",
        "text/csv",
        "multipart/form-data",
    },
    ("post", "/organizations/{orgId}/usage/query"): {"application/json"},
    ("post", "/organizations/{orgId}/billjobs"): {"application/json"},
    ("put", "/organizations/{orgId}/bills/{bill_id}/status"): {"application/json"},
}


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    document = edge_app(SETTINGS, StubWorker()).openapi()
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_every_route_that_reads_a_body_declares_it_with_its_media_types() -> None:
    declared = operations()
    for key, kinds in BODIES.items():
        assert kinds <= set(declared[key]["requestBody"]["content"]), key


def test_every_organization_route_declares_its_errors_in_our_shape_and_no_422() -> None:
    for (method, path), operation in operations().items():
        responses = operation["responses"]
        assert "422" not in responses, (method, path)
        if path.startswith("/organizations/"):
            for status in ("400", "401", "404"):
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)


def test_the_usage_query_and_reads_declare_503_for_no_worker_and_502_for_a_worker_error() -> None:
    declared = operations()
    for key in [
        ("post", "/organizations/{orgId}/usage/query"),
        ("get", "/organizations/{orgId}/accounts/{code}"),
        ("get", "/organizations/{orgId}/accountplans"),
    ]:
        assert {"502", "503"} <= set(declared[key]["responses"]), key


async def test_a_parameter_fastapi_refuses_is_a_400_naming_it() -> None:
    app = edge_app(SETTINGS, StubWorker())

    @app.get("/probe")
    async def probe(limit: Annotated[int, Query()]) -> dict[str, int]:
        return {"limit": limit}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        response = await client.get("/probe", params={"limit": "many"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["field"] == "limit"
