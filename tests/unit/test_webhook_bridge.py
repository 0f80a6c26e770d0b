"""The Stripe webhook bridge: only verified events reach `stripe.events`, and only once.

The bridge runs on a FastAPI app with a recording producer instead of Kafka; requests are
signed the way Stripe signs them: `t=<ts>,v1=<hex HMAC-SHA256(secret, "<ts>.<body>")>`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from connectors.http.edge import Edge
from connectors.http.webhooks import MAX_BODY_BYTES, RecentEventIds, webhook_router
from connectors.metrics import Metrics
from streams.settings import Settings
from streams.topics import Topics
from tests.unit import stripe_payloads as sp
from tests.unit.edge_stubs import FakeProducer

SECRET = "whsec_current"
OLD_SECRET = "whsec_previous"
URL = "/webhooks/stripe"


@dataclass
class Bridge:
    client: httpx.AsyncClient
    producer: FakeProducer
    metrics: Metrics
    settings: Settings

    async def post(
        self,
        body: bytes,
        *,
        secret: str = SECRET,
        at: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        signed = {"Stripe-Signature": signature(body, secret, at if at is not None else now())}
        return await self.client.post(URL, content=body, headers={**signed, **(headers or {})})

    def count(self, outcome: str, type: str) -> float:
        labels = {"outcome": outcome, "type": type}
        return self.metrics.registry.get_sample_value("meterline_webhooks_total", labels) or 0.0


def now() -> int:
    return int(time.time())


def signature(body: bytes, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


@asynccontextmanager
async def build(
    secrets: tuple[str, ...] = (SECRET,), producer: FakeProducer | None = None, **options: Any
) -> AsyncIterator[Bridge]:
    settings = Settings(
        stripe_webhook_secrets=tuple(SecretStr(s) for s in secrets),
        stripe_webhook_tolerance_s=300,
        topic_prefix="t.",
    )
    producer = producer or FakeProducer()
    metrics = Metrics()
    app = FastAPI()
    app.state.edge = Edge(settings, Topics.from_settings(settings), metrics, producer)  # type: ignore[arg-type]
    app.include_router(webhook_router(settings, **options))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        yield Bridge(client, producer, metrics, settings)


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    async with build() as bridge:
        yield bridge


def customer_created(id: str = "evt_cus_1", customer: str = "cus_1") -> bytes:
    payload = sp.event("customer.created", sp.customer(customer), created=sp.T0, id=id)
    return orjson.dumps(payload)


# --- refused: nothing published -------------------------------------------------------


async def test_without_a_configured_secret_the_bridge_answers_503_and_publishes_nothing() -> None:
    async with build(secrets=()) as unconfigured:
        response = await unconfigured.post(customer_created())
        assert response.status_code == 503
        assert "STRIPE_WEBHOOK_SECRET" in response.json()["message"]
        assert unconfigured.producer.sent == []


async def test_a_request_without_a_signature_header_is_refused_with_400(bridge: Bridge) -> None:
    response = await bridge.client.post(URL, content=customer_created())
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_signature",
        "message": "missing Stripe-Signature header",
        "field": "Stripe-Signature",
    }
    assert bridge.producer.sent == []


async def test_a_signature_made_with_an_unknown_secret_is_refused_with_400(bridge: Bridge) -> None:
    response = await bridge.post(customer_created(), secret="whsec_attacker")
    assert response.status_code == 400
    assert "matches no configured webhook secret" in response.json()["message"]
    assert bridge.producer.sent == []
    assert bridge.count("rejected", "-") == 1


async def test_a_body_changed_after_signing_is_refused_with_400(bridge: Bridge) -> None:
    body = customer_created()
    header = signature(body, SECRET, now())
    tampered = body.replace(b"Acme Ltd", b"Evil Ltd")
    response = await bridge.client.post(URL, content=tampered, headers={"Stripe-Signature": header})
    assert response.status_code == 400
    assert bridge.producer.sent == []


async def test_a_signature_older_than_the_tolerance_is_refused_with_400_naming_it(
    bridge: Bridge,
) -> None:
    response = await bridge.post(customer_created(), at=now() - 301)
    assert response.status_code == 400
    assert "outside the tolerance of 300 s" in response.json()["message"]
    assert bridge.producer.sent == []


async def test_a_signature_dated_beyond_the_tolerance_in_the_future_is_refused_with_400(
    bridge: Bridge,
) -> None:
    response = await bridge.post(customer_created(), at=now() + 3600)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert "in the future, outside the tolerance of 300 s" in response.json()["message"]
    assert bridge.producer.sent == []
    assert bridge.count("rejected", "-") == 1


async def test_a_signature_dated_slightly_in_the_future_is_accepted(bridge: Bridge) -> None:
    response = await bridge.post(customer_created(), at=now() + 60)
    assert response.status_code == 200, response.text
    assert len(bridge.producer.sent) == 1


async def test_a_malformed_signature_header_is_refused_with_400(bridge: Bridge) -> None:
    response = await bridge.post(customer_created(), headers={"Stripe-Signature": "v1=abc"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert bridge.producer.sent == []


async def test_a_signed_body_that_is_not_json_is_refused_with_400(bridge: Bridge) -> None:
    response = await bridge.post(b"id=evt_1&type=customer.created")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_event"
    assert "not JSON" in response.json()["message"]
    assert bridge.producer.sent == []


async def test_signed_json_that_is_not_an_event_is_refused_with_400(bridge: Bridge) -> None:
    response = await bridge.post(orjson.dumps({"object": "event", "type": "customer.created"}))
    assert response.status_code == 400
    assert "'id'" in response.json()["message"]
    assert bridge.producer.sent == []


async def test_a_declared_body_over_512_kib_is_refused_with_413(bridge: Bridge) -> None:
    body = b" " * (MAX_BODY_BYTES + 1)
    response = await bridge.post(body)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert bridge.producer.sent == []


async def test_a_streamed_body_over_512_kib_is_refused_with_413(bridge: Bridge) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: capped while reading
        for _ in range(9):
            yield b" " * (64 * 1024)

    response = await bridge.client.post(URL, content=chunks(), headers={"Stripe-Signature": "t=1"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert bridge.producer.sent == []


# --- accepted ------------------------------------------------------------------------


async def test_a_verified_event_is_published_raw_keyed_by_its_customer_with_its_ids(
    bridge: Bridge,
) -> None:
    body = customer_created(id="evt_42", customer="cus_7")
    response = await bridge.post(body)
    assert response.status_code == 200
    assert response.json() == {"received": True}
    [sent] = bridge.producer.sent
    assert (sent.topic, sent.key, sent.value) == ("t.stripe.events", b"cus_7", body)
    assert sent.headers["stripe-event-id"] == b"evt_42"
    assert sent.headers["stripe-event-type"] == b"customer.created"
    assert sent.headers["stripe-api-version"] == sp.BASIL.encode()
    assert sent.headers["received-at"].endswith(b"+00:00")
    assert bridge.count("published", "customer.created") == 1


async def test_a_subscription_event_is_keyed_by_the_subscription_customer(bridge: Bridge) -> None:
    sub = sp.subscription("sub_9", api=sp.ACACIA, customer="cus_9")
    body = orjson.dumps(sp.event("customer.subscription.created", sub, created=sp.T0))
    assert (await bridge.post(body)).status_code == 200
    assert bridge.producer.sent[0].key == b"cus_9"


async def test_an_event_without_a_customer_is_keyed_by_its_event_id(bridge: Bridge) -> None:
    session = sp.checkout_session(customer=None, subscription=None, mode="payment")
    body = orjson.dumps(sp.event("checkout.session.completed", session, created=sp.T0, id="evt_p"))
    assert (await bridge.post(body)).status_code == 200
    assert bridge.producer.sent[0].key == b"evt_p"


async def test_a_body_signed_with_the_previous_secret_is_accepted_during_rotation() -> None:
    async with build(secrets=(SECRET, OLD_SECRET)) as rotating:
        assert (
            await rotating.post(customer_created("evt_old"), secret=OLD_SECRET)
        ).status_code == 200
        assert (await rotating.post(customer_created("evt_new"), secret=SECRET)).status_code == 200
        assert [s.headers["stripe-event-id"] for s in rotating.producer.sent] == [
            b"evt_old",
            b"evt_new",
        ]


async def test_a_duplicate_delivery_is_answered_200_without_publishing_again(
    bridge: Bridge,
) -> None:
    body = customer_created("evt_dup")
    assert (await bridge.post(body)).json() == {"received": True}
    retry = await bridge.post(body, at=now() + 1)  # Stripe signs each attempt afresh
    assert retry.status_code == 200
    assert retry.json() == {"received": True, "duplicate": True}
    assert len(bridge.producer.sent) == 1
    assert bridge.count("duplicate", "customer.created") == 1


async def test_an_event_type_the_accounts_agent_does_not_read_is_counted_not_published(
    bridge: Bridge,
) -> None:
    invoice = {"id": "in_1", "object": "invoice", "customer": "cus_1"}
    body = orjson.dumps(sp.event("invoice.paid", invoice, created=sp.T0))
    response = await bridge.post(body)
    assert response.status_code == 200
    assert response.json() == {"received": True, "ignored": True}
    assert bridge.producer.sent == []
    assert bridge.count("ignored", "invoice.paid") == 1


# --- Kafka -----------------------------------------------------------------------------


async def test_when_kafka_refuses_the_write_the_answer_is_503_and_a_retry_is_published() -> None:
    producer = FakeProducer(refuse="Broker: Not enough in-sync replicas")
    async with build(producer=producer) as bridge:
        body = customer_created("evt_retry")
        response = await bridge.post(body)
        assert response.status_code == 503
        assert "Not enough in-sync replicas" in response.json()["message"]
        assert bridge.count("unavailable", "customer.created") == 1
        producer.refuse = None  # Kafka is back; Stripe retries the same event
        assert (await bridge.post(body)).json() == {"received": True}
        assert len(producer.sent) == 1


async def test_when_kafka_does_not_acknowledge_in_time_the_answer_is_503() -> None:
    async with build(producer=FakeProducer(silent=True), ack_timeout_s=0.05) as bridge:
        response = await bridge.post(customer_created())
        assert response.status_code == 503
        assert "no acknowledgement within 0.05 s" in response.json()["message"]


def test_the_duplicate_memory_forgets_the_least_recently_seen_id_beyond_its_capacity() -> None:
    recent = RecentEventIds(capacity=2)
    recent.add("evt_a")
    recent.add("evt_b")
    assert "evt_a" in recent  # seen again: now the most recent
    recent.add("evt_c")
    assert "evt_b" not in recent
    assert "evt_a" in recent
    assert "evt_c" in recent
    assert len(recent) == 2
