"""Stripe → accounts on a real broker: signed webhooks in, account state out of the read API.

One worker (`meterline worker`) and one HTTP edge (`meterline http`) run as subprocesses for
the whole module, on their own topic prefix and app id, with the example catalog
published first. Each test drives them only through HTTP and Kafka; the last one restarts
the worker (tests run in file order).
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.catalog_io import load_document, publish
from connectors.cli import EXAMPLE_CATALOG
from connectors.environment import process_env
from connectors.kafka.admin import create_topics
from connectors.kafka.broker import free_port
from connectors.kafka.producer import new_producer
from streams.topics import Topics
from tests.support import eventually, value_of
from tests.unit import stripe_payloads as sp

pytestmark = pytest.mark.integration

SECRET = "whsec_integration"
API_KEY = "key-accounts-flow"
ORG = "acme"
PARTITIONS = 3

STARTER = sp.price("price_starter", lookup_key="starter_monthly", product="prod_starter")
PRO = sp.price("price_pro", lookup_key="pro_monthly", product="prod_pro")
ENTERPRISE = sp.price("price_ent", lookup_key="enterprise_monthly", product="prod_ent")


@dataclass
class Stack:
    bootstrap: str
    topics: Topics
    edge: str
    worker: str
    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        self.processes[name] = _start([name], self.env, self.logs / f"{name}.log")

    def wait_ready(self) -> None:
        eventually(lambda: _assigned(self.worker, self.topics.stripe_events), 120, 0.5)
        eventually(lambda: _healthy(f"{self.edge}/healthz"), timeout=60, interval=0.2)

    def restart_worker(self) -> None:
        """A new worker process of the same app: it recovers every table from Kafka."""
        _stop(self.processes.pop("worker"))
        self.start("worker")
        self.wait_ready()

    def webhook(self, payload: dict[str, Any]) -> httpx.Response:
        body = orjson.dumps(payload)
        timestamp = int(time.time())
        digest = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
        headers = {
            "Stripe-Signature": f"t={timestamp},v1={digest.hexdigest()}",
            "Content-Type": "application/json",
        }
        return httpx.post(f"{self.edge}/webhooks/stripe", content=body, headers=headers)

    def get(self, path: str, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        url = f"{self.edge}/organizations/{ORG}{path}"
        return httpx.get(url, params=params, headers=headers, timeout=10)

    def account(self, code: str) -> dict[str, Any] | None:
        response = self.get(f"/accounts/{code}")
        return response.json() if response.status_code == 200 else None

    def plans(self, code: str) -> list[dict[str, Any]]:
        response = self.get("/accountplans", account=code)
        return list(response.json()["data"]) if response.status_code == 200 else []

    def rejected(self) -> list[dict[str, Any]]:
        return [
            orjson.loads(value)
            for value in read_all(self.bootstrap, self.topics.stripe_events_rejected)
        ]


def read_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every value on `topic` now (up to each partition's high watermark)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}"})
    values: list[bytes] = []
    try:
        for partition in range(PARTITIONS):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            position = low
            while position < high:
                message = consumer.poll(10)
                assert message is not None, f"{topic}[{partition}] stalled at {position}"
                if message.error():
                    continue
                offset = message.offset()
                assert offset is not None, f"{topic}[{partition}]: a message without an offset"
                position = offset + 1
                values.append(value_of(message))
    finally:
        consumer.close()
    return values


def event_id_of(record: dict[str, Any]) -> str | None:
    """The id of a dead-lettered event (None when the original was not a JSON object)."""
    event = record["event"]
    return event.get("id") if isinstance(event, dict) else None


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _assigned(worker: str, topic: str) -> bool:
    try:
        assigned = httpx.get(f"{worker}/healthz", timeout=1).json()["assigned"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return all(f"{topic}[{p}]" in assigned for p in range(PARTITIONS))


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "connectors.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    unique = uuid.uuid4().hex[:10]
    topics = Topics(prefix=f"acc{unique}.", partitions=PARTITIONS)
    create_topics(kafka_bootstrap, topics.all())
    publish(kafka_bootstrap, topics.catalog, load_document(EXAMPLE_CATALOG))
    data = tmp_path_factory.mktemp("accounts-flow")
    worker_port, http_port = free_port(), free_port()
    env = process_env(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topics.prefix,
        app_id=f"acc{unique}",
        partitions=PARTITIONS,
        worker_web_port=worker_port,
        http_port=http_port,
        data_dir=data,
        org_id=ORG,
        api_keys=API_KEY,
        stripe_webhook_secrets=f"whsec_retired,{SECRET}",
    )
    stack = Stack(
        kafka_bootstrap,
        topics,
        edge=f"http://127.0.0.1:{http_port}",
        worker=f"http://127.0.0.1:{worker_port}",
        env=env,
        logs=data,
    )
    try:
        stack.start("worker")
        stack.start("http")
        stack.wait_ready()
        yield stack
    finally:
        for process in stack.processes.values():
            _stop(process)
        print(f"worker and edge logs in {data}")


def same_moment(iso: str | None, epoch: int) -> bool:
    return iso is not None and datetime.fromisoformat(iso) == datetime.fromtimestamp(epoch, UTC)


def lifecycle(customer: str, api: str) -> list[dict[str, Any]]:
    """Checkout of the starter plan, a change to pro, a renewal, then a cancellation."""
    sub_id, item_id = f"sub_{customer}", f"si_{customer}"
    change_at, renewal_at, cancel_at = sp.T0 + 10 * sp.DAY, sp.T0 + sp.MONTH, sp.T0 + 40 * sp.DAY
    renewed = (sp.T0 + sp.MONTH, sp.T0 + 2 * sp.MONTH)

    def sub(type: str, created: int, price: dict[str, Any], **fields: Any) -> dict[str, Any]:
        previous = fields.pop("previous_attributes", None)
        obj = sp.subscription(
            sub_id, api=api, customer=customer, items=[sp.Item(item_id, price)], **fields
        )
        return sp.event(
            f"customer.subscription.{type}",
            obj,
            created=created,
            api=api,
            id=f"evt_{customer}_{type}_{created}",
            previous_attributes=previous,
        )

    old_items = sp.subscription(
        sub_id, api=api, customer=customer, items=[sp.Item(item_id, STARTER)]
    )["items"]
    return [
        sp.event(
            "customer.created",
            sp.customer(customer, name="Acme Ltd", email="billing@acme.test"),
            created=sp.T0 - 60,
            api=api,
            id=f"evt_{customer}_customer",
        ),
        sp.event(
            "checkout.session.completed",
            sp.checkout_session(f"cs_{customer}", customer=customer, subscription=sub_id),
            created=sp.T0,
            api=api,
            id=f"evt_{customer}_checkout",
        ),
        sub("created", sp.T0, STARTER),
        sub("updated", change_at, PRO, previous_attributes={"items": old_items}),
        sub("updated", renewal_at, PRO, period=renewed),
        sub(
            "deleted",
            cancel_at,
            PRO,
            period=renewed,
            status="canceled",
            canceled_at=cancel_at,
            ended_at=cancel_at,
        ),
    ]


@pytest.mark.parametrize("api", sp.API_VERSIONS)
def test_a_checkout_and_subscription_lifecycle_is_readable_as_account_and_plans(
    stack: Stack, api: str
) -> None:
    customer = f"cus_{api.split('.')[-1]}_{uuid.uuid4().hex[:6]}"
    for payload in lifecycle(customer, api):
        response = stack.webhook(payload)
        assert response.status_code == 200, response.text

    def canceled() -> list[dict[str, Any]] | None:
        plans = stack.plans(customer)
        return plans if any(p["status"] == "CANCELED" for p in plans) else None

    starter, pro = eventually(canceled, timeout=30)
    change_at, cancel_at = sp.T0 + 10 * sp.DAY, sp.T0 + 40 * sp.DAY
    assert (starter["planCode"], starter["status"]) == ("starter", "ENDED")
    assert same_moment(starter["startDate"], sp.T0)
    assert same_moment(starter["endDate"], change_at)
    assert (pro["planCode"], pro["status"]) == ("pro", "CANCELED")
    assert pro["id"] == f"sub_{customer}@{change_at}"
    assert same_moment(pro["startDate"], change_at)
    assert same_moment(pro["endDate"], cancel_at)
    assert same_moment(pro["currentPeriodStart"], sp.T0 + sp.MONTH)  # renewed before the cancel
    assert {p["accountCode"] for p in (starter, pro)} == {customer}

    account = stack.account(customer)
    assert account is not None
    assert (account["code"], account["name"], account["emailAddress"]) == (
        customer,
        "Acme Ltd",
        "billing@acme.test",
    )
    assert account["currency"] == "USD"
    assert account["checkout"]["sessionId"] == f"cs_{customer}"


def test_a_repeated_delivery_is_not_published_twice(stack: Stack) -> None:
    payload = lifecycle(f"cus_dup_{uuid.uuid4().hex[:6]}", sp.BASIL)[0]
    assert stack.webhook(payload).json() == {"received": True}
    assert stack.webhook(payload).json() == {"received": True, "duplicate": True}


def test_an_unknown_account_is_404_and_reads_need_an_api_key(stack: Stack) -> None:
    response = stack.get("/accounts/cus_nobody")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert stack.get("/accountplans", account="cus_nobody").status_code == 404
    assert stack.get("/accountplans").status_code == 400
    anonymous = httpx.get(f"{stack.edge}/organizations/{ORG}/accounts/cus_nobody")
    assert anonymous.status_code == 401


def test_events_the_agent_cannot_apply_are_dead_lettered_and_the_next_one_still_applies(
    stack: Stack,
) -> None:
    token = uuid.uuid4().hex[:6]
    no_status = {"id": f"sub_{token}", "object": "subscription", "customer": f"cus_a_{token}"}
    follower = f"cus_after_{token}"

    def event(type: str, obj: dict[str, Any], id: str) -> bytes:
        return orjson.dumps(sp.event(type, obj, created=sp.T0, id=f"{id}_{token}"))

    messages = [  # as a producer other than the bridge might publish them
        (f"cus_a_{token}", f"not json {token}".encode()),
        (f"cus_a_{token}", event("customer.subscription.created", no_status, "evt_ns")),
        (f"cus_a_{token}", event("customer.created", sp.customer(f"cus_b_{token}"), "evt_key")),
        (follower, event("customer.created", sp.customer(follower), "evt_ok")),
    ]
    producer = new_producer(stack.bootstrap)
    for key, value in messages:
        producer.produce(stack.topics.stripe_events, key=key.encode(), value=value)
    assert producer.flush(10) == 0

    def reasons() -> dict[str, str] | None:
        found = {}
        for record in stack.rejected():
            ident = event_id_of(record) or record["event"]
            if isinstance(ident, str) and token in ident:
                assert record["source"].startswith(f"{stack.topics.stripe_events}[")
                found[ident] = record["reason"]
        return found if len(found) == 3 else None

    found = eventually(reasons, timeout=30)
    assert found[f"not json {token}"].startswith("the message is not JSON")
    assert "data.object.status" in found[f"evt_ns_{token}"]
    assert "is not the event's customer" in found[f"evt_key_{token}"]
    assert eventually(lambda: stack.account(follower), timeout=30)["code"] == follower


UNMAPPED_CUSTOMER = f"cus_unmapped_{uuid.uuid4().hex[:6]}"


def enterprise_subscription(type: str, created: int) -> dict[str, Any]:
    customer = UNMAPPED_CUSTOMER
    obj = sp.subscription(
        f"sub_{customer}",
        api=sp.BASIL,
        customer=customer,
        items=[sp.Item(f"si_{customer}", ENTERPRISE)],
    )
    return sp.event(
        f"customer.subscription.{type}", obj, created=created, id=f"evt_{customer}_{created}"
    )


def test_an_unmapped_price_is_stored_unmapped_and_dead_lettered_with_its_reason(
    stack: Stack,
) -> None:
    assert stack.webhook(enterprise_subscription("created", sp.T0)).status_code == 200

    def dead_letter() -> dict[str, Any] | None:
        event_id = f"evt_{UNMAPPED_CUSTOMER}_{sp.T0}"
        return next((r for r in stack.rejected() if event_id_of(r) == event_id), None)

    record = eventually(dead_letter, timeout=30)
    assert record["reason"].startswith("unmapped price price_ent: no plan mapping")
    assert record["source"].startswith(f"{stack.topics.stripe_events}[")
    assert record["unmapped"]["stripeLookupKey"] == "enterprise_monthly"
    [plan] = eventually(lambda: stack.plans(UNMAPPED_CUSTOMER), timeout=30)
    assert (plan["status"], plan["planCode"]) == ("UNMAPPED", None)


def test_once_the_price_is_mapped_the_next_subscription_event_maps_the_plan(
    stack: Stack,
) -> None:
    catalog = load_document(EXAMPLE_CATALOG)
    mapping = {"code": "enterprise_monthly", "plan": "pro", "stripeLookupKey": "enterprise_monthly"}
    catalog["planMappings"] = [*catalog["planMappings"], mapping]
    publish(stack.bootstrap, stack.topics.catalog, catalog)
    # A restarted worker reads the whole catalog, and its tables back from their changelogs.
    stack.restart_worker()
    [recovered] = eventually(lambda: stack.plans(UNMAPPED_CUSTOMER), timeout=30)
    assert (recovered["status"], recovered["sourceEventId"]) == (
        "UNMAPPED",
        f"evt_{UNMAPPED_CUSTOMER}_{sp.T0}",
    )

    assert stack.webhook(enterprise_subscription("updated", sp.T0 + sp.DAY)).status_code == 200

    def mapped() -> dict[str, Any] | None:
        plans = stack.plans(UNMAPPED_CUSTOMER)
        return plans[0] if len(plans) == 1 and plans[0]["status"] == "ACTIVE" else None

    plan = eventually(mapped, timeout=30)
    assert (plan["id"], plan["planCode"]) == (f"sub_{UNMAPPED_CUSTOMER}", "pro")
    assert same_moment(plan["startDate"], sp.T0)  # the same plan, mapped from its start
