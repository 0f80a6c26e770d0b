"""API keys with scopes (ingest, read, admin) and an organization, from a keys file the
edge re-reads when it changes; keys of METERLINE_API_KEYS keep every right. Every
refusal is counted in /metrics."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from connectors.http.keys import KeyFileError, parse_key_file
from streams.settings import Settings
from tests.unit.edge_stubs import FakeProducer, StubWorker, edge_client

ORG = "org-1"
API = f"/organizations/{ORG}"
LEGACY = "legacy-key-from-the-environment"
KEYS = {
    "ingest": "ingest-key-0123456789",
    "read": "read-key-0123456789ab",
    "admin": "admin-key-0123456789a",
    "other": "other-org-key-01234567",
    "unscoped": "unscoped-key-0123456789",
}
FILE = {
    "keys": [
        {"name": "producer", "key": KEYS["ingest"], "scopes": ["ingest"]},
        {"name": "dashboard", "key": KEYS["read"], "scopes": ["read"]},
        {"name": "ops", "key": KEYS["admin"], "scopes": ["admin"], "org": ORG},
        {"name": "elsewhere", "key": KEYS["other"], "org": "org-2"},
        {"name": "old-style", "key": KEYS["unscoped"]},
    ]
}
MEASUREMENTS = {
    "measurements": [
        {
            "uid": "u-1",
            "meter": "api",
            "account": "acme",
            "ts": "2024-04-01T10:00:00Z",
            "measure": {"calls": 1},
        }
    ]
}
QUERY = {
    "startDate": "2024-04-01T00:00:00Z",
    "endDate": "2024-04-02T00:00:00Z",
    "accountIds": ["acme"],
    "aggregations": ["api_calls"],
}
GRANT = {
    "uid": "g-1",
    "account": "acme",
    "currency": "USD",
    "amount": "25.00",
    "startDate": "2024-04-01",
    "reason": "outage credit",
}


def write(path: Path, document: Any) -> None:
    """Replace the file as an operator should: a new file renamed over the old one."""
    staged = path.with_suffix(".new")
    staged.write_text(yaml.safe_dump(document))
    os.replace(staged, path)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    write(path, FILE)
    return path


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
async def client(keys_file: Path, producer: FakeProducer) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        org_id=ORG,
        api_keys=(SecretStr(LEGACY),),
        api_keys_file=keys_file,
        topic_prefix="unit.",
        partitions=2,
    )
    async with edge_client(settings, StubWorker(), producer) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def statuses(client: httpx.AsyncClient, key: str) -> dict[str, int]:
    """What each kind of route answers this key."""
    auth = bearer(key)
    answers = {
        "ingest": await client.post(f"{API}/measurements", json=MEASUREMENTS, headers=auth),
        "query": await client.post(f"{API}/usage/query", json=QUERY, headers=auth),
        "bills": await client.get(f"{API}/bills", headers=auth),
        "billjob": await client.post(f"{API}/billjobs", json={}, headers=auth),
        "approve": await client.put(
            f"{API}/bills/nope/status", json={"status": "APPROVED"}, headers=auth
        ),
        "grant": await client.post(f"{API}/balances", json=GRANT, headers=auth),
        "balances": await client.get(f"{API}/balances?account=acme", headers=auth),
    }
    return {name: answer.status_code for name, answer in answers.items()}


async def test_an_ingest_key_submits_measurements_and_nothing_else(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    assert await statuses(client, KEYS["ingest"]) == {
        "ingest": 200,
        "query": 403,
        "bills": 403,
        "billjob": 403,
        "approve": 403,
        "grant": 403,
        "balances": 403,
    }
    assert [sent.topic for sent in producer.sent] == ["unit.measurements"]


async def test_a_read_key_reads_and_writes_nothing(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    assert await statuses(client, KEYS["read"]) == {
        "ingest": 403,
        "query": 200,
        "bills": 200,
        "billjob": 403,
        "approve": 403,
        "grant": 403,
        "balances": 200,
    }
    assert producer.sent == []


async def test_an_admin_key_runs_and_approves_bills_and_reads_but_does_not_ingest(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    # "approve" reaches the bill lifecycle: 404 for a bill the edge does not know
    assert await statuses(client, KEYS["admin"]) == {
        "ingest": 403,
        "query": 200,
        "bills": 200,
        "billjob": 202,
        "approve": 404,
        "grant": 200,
        "balances": 200,
    }
    assert {sent.topic for sent in producer.sent} == {"unit.bill.commands", "unit.balances"}


@pytest.mark.parametrize("key", [LEGACY, KEYS["unscoped"]])
async def test_a_key_without_scopes_keeps_every_right(client: httpx.AsyncClient, key: str) -> None:
    assert await statuses(client, key) == {
        "ingest": 200,
        "query": 200,
        "bills": 200,
        "billjob": 202,
        "approve": 404,
        "grant": 200,
        "balances": 200,
    }


async def test_a_key_of_another_organization_is_refused_naming_both(
    client: httpx.AsyncClient, producer: FakeProducer
) -> None:
    answer = await client.post(
        f"{API}/measurements", json=MEASUREMENTS, headers=bearer(KEYS["other"])
    )
    assert answer.status_code == 403
    assert answer.json() == {
        "error": "forbidden",
        "message": "API key 'elsewhere' is not a key of organization 'org-1'",
        "field": "Authorization",
    }
    assert producer.sent == []


async def test_a_missing_scope_is_a_403_naming_the_key_and_the_scope_needed(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post(f"{API}/billjobs", json={}, headers=bearer(KEYS["read"]))
    assert answer.status_code == 403
    assert answer.json()["message"] == (
        "API key 'dashboard' has the scopes read; POST /organizations/{orgId}/billjobs needs admin"
    )
    assert answer.json()["field"] == "Authorization"


async def test_keys_rotate_when_the_file_changes_without_a_restart(
    client: httpx.AsyncClient, keys_file: Path
) -> None:
    rotated = "rotated-ingest-key-0123"
    assert (await statuses(client, KEYS["ingest"]))["ingest"] == 200
    write(keys_file, {"keys": [{"name": "producer-2", "key": rotated, "scopes": ["ingest"]}]})
    assert (await statuses(client, KEYS["ingest"]))["ingest"] == 401  # revoked
    assert (await statuses(client, rotated))["ingest"] == 200
    assert (await statuses(client, LEGACY))["ingest"] == 200  # the environment's stay


async def test_a_keys_file_that_turns_invalid_leaves_the_last_good_keys_in_force(
    client: httpx.AsyncClient, keys_file: Path
) -> None:
    write(keys_file, {"keys": [{"name": "broken", "scopes": ["everything"]}]})
    assert (await statuses(client, KEYS["ingest"]))["ingest"] == 200
    assert (await statuses(client, "broken"))["ingest"] == 401


async def test_a_sha256_entry_accepts_the_key_it_hashes(
    client: httpx.AsyncClient, keys_file: Path
) -> None:
    secret = "hashed-key-0123456789"
    hashed = hashlib.sha256(secret.encode()).hexdigest()
    write(keys_file, {"keys": [{"name": "hashed", "sha256": hashed, "scopes": ["read"]}]})
    answer = await client.get(f"{API}/bills", headers=bearer(secret))
    assert answer.status_code == 200
    assert (await client.get(f"{API}/bills", headers=bearer(hashed))).status_code == 401


def refusals(text: str) -> dict[tuple[str, str], float]:
    counted = {}
    for family in text_string_to_metric_families(text):
        if family.name == "meterline_http_auth_refusals":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counted[(sample.labels["reason"], sample.labels["scope"])] = sample.value
    return counted


async def test_every_refusal_is_counted_in_metrics_by_reason_and_scope(
    client: httpx.AsyncClient,
) -> None:
    await client.post(f"{API}/measurements", json=MEASUREMENTS)
    await client.post(f"{API}/measurements", json=MEASUREMENTS, headers=bearer("wrong"))
    await client.post(f"{API}/measurements", json=MEASUREMENTS, headers=bearer(KEYS["other"]))
    await client.post(f"{API}/usage/query", json=QUERY, headers=bearer(KEYS["ingest"]))
    await client.post(f"{API}/usage/query", json=QUERY, headers=bearer(KEYS["ingest"]))
    await client.get("/organizations/org-9/bills", headers=bearer(LEGACY))
    metrics = await client.get("/metrics")
    assert refusals(metrics.text) == {
        ("missing_key", "ingest"): 1,
        ("invalid_key", "ingest"): 1,
        ("other_organization", "ingest"): 1,
        ("missing_scope", "read"): 2,
        ("unknown_organization", "read"): 1,
    }


def test_a_bad_keys_file_names_each_entry_and_field() -> None:
    text = orjson.dumps(
        {
            "keys": [
                {"key": "short", "scopes": ["ingest"]},
                {"name": "x", "key": "k" * 20, "sha256": "0" * 64},
                {"key": "k" * 20, "scopes": ["write"]},
            ]
        }
    ).decode()
    with pytest.raises(KeyFileError) as raised:
        parse_key_file(text, "keys.json")
    message = str(raised.value)
    assert message.startswith("keys.json: ")
    assert "keys.0.key: a key has at least 16 characters" in message
    assert "keys.1: give either key or sha256" in message
    assert "keys.2.scopes.0: Input should be 'ingest', 'read' or 'admin'" in message


def test_config_check_refuses_a_bad_keys_file_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - {name: a, scopes: [read]}\n")
    done = subprocess.run(
        [sys.executable, "-m", "connectors.cli", "config", "check"],
        env={"PATH": "/usr/bin:/bin", "METERLINE_API_KEYS_FILE": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    text = " ".join(done.stderr.split())
    assert f"METERLINE_API_KEYS_FILE: {path}: keys.0: give either key or sha256" in text


def test_a_missing_keys_file_stops_the_edge_naming_the_variable_and_the_path(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "connectors.cli", "config", "check"],
        env={"PATH": "/usr/bin:/bin", "METERLINE_API_KEYS_FILE": str(missing)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    text = " ".join(done.stderr.split())
    assert f"METERLINE_API_KEYS_FILE: {missing}: cannot be read (No such file or directory)" in text
