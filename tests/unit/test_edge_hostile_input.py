"""What the schema fuzzer of the real stack (tests/integration/test_edge_schema_fuzz.py)
found, each kept as a case of its own."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from streams.settings import Settings
from tests.unit.edge_stubs import FakeProducer, StubWorker, edge_client

SETTINGS = Settings(org_id="org-1", api_keys=(SecretStr("key-1"),), topic_prefix="unit.")
AUTH = {"Authorization": "Bearer key-1"}
MEASUREMENT = {
    "uid": "u-1",
    "meter": "api",
    "account": "acme",
    "ts": "2024-04-01T10:00:00Z",
    "measure": {"calls": 1},
}


async def test_an_ingest_body_with_a_property_named_empty_is_a_400_naming_the_body() -> None:
    producer = FakeProducer()
    async with edge_client(SETTINGS, StubWorker(), producer) as client:
        answer: httpx.Response = await client.post(
            "/organizations/org-1/measurements",
            json={"measurements": [MEASUREMENT], "": 0},
            headers=AUTH,
        )
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_request",
        "message": "unknown property '': the body has only 'measurements'",
        "field": "body",
    }
    assert producer.sent == []
