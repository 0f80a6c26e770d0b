"""The ingest edge on a real broker: what the API, uploads and the producer helper publish."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from connectors.http.app import create_app
from connectors.kafka.admin import create_topics
from connectors.kafka.measurements import MeasurementProducer, encode_measurement
from connectors.kafka.producer import new_producer
from streams.partitioning import partition_for
from streams.settings import Settings
from streams.topics import MEASUREMENTS, Topics
from tests.support import value_of

pytestmark = pytest.mark.integration

PARTITIONS = 4
ORG = "acme-org"
AUTH = {"Authorization": "Bearer secret"}


class Received(NamedTuple):
    partition: int
    key: bytes
    value: Any


def consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Received]:
    """The first `count` messages of every partition of `topic` (fails after `timeout`)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    received: list[Received] = []
    deadline = time.monotonic() + timeout
    try:
        while len(received) < count and time.monotonic() < deadline:
            for message in consumer.consume(count - len(received), timeout=0.5):
                assert message.error() is None, message.error()
                partition, key = message.partition(), message.key()
                assert partition is not None and key is not None, "a message without a key"
                received.append(Received(partition, key, orjson.loads(value_of(message))))
    finally:
        consumer.close()
    assert len(received) == count, f"got {len(received)} of {count} messages from {topic}"
    return received


def measurement(n: int, account: str) -> dict[str, Any]:
    return {
        "uid": f"u-{n}",
        "meter": "api",
        "account": account,
        "ts": "2024-04-01T10:00:00Z",
        "measure": {"calls": n, "bytes": n * 1.5},
        "who": {"user": f"user-{n % 3}"},
    }


SENT = [measurement(n, f"acct-{n % 20}") for n in range(60)]


def assert_envelopes_on_account_partitions(received: list[Received]) -> list[dict[str, Any]]:
    """Every message is an envelope whose measurements all live on its partition."""
    out: list[dict[str, Any]] = []
    for message in received:
        measurements = message.value["measurements"]
        assert message.key == measurements[0]["account"].encode()
        assert {partition_for(m["account"], PARTITIONS) for m in measurements} == {
            message.partition
        }
        out += measurements
    return sorted(out, key=lambda m: int(m["uid"][2:]))


@pytest.fixture
def settings(kafka_bootstrap: str, unique: str) -> Settings:
    settings = Settings(
        org_id=ORG,
        api_keys=(SecretStr("secret"),),
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{unique}.",
        partitions=PARTITIONS,
    )
    create_topics(kafka_bootstrap, [Topics.from_settings(settings).resolve(MEASUREMENTS)])
    return settings


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):  # starts (and finally flushes) the producer
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
            yield client


async def test_the_ingest_api_publishes_one_envelope_per_partition_of_its_accounts(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.post(
        f"/organizations/{ORG}/measurements",
        content=orjson.dumps({"measurements": SENT}),
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    partitions = {partition_for(m["account"], PARTITIONS) for m in SENT}
    received = consume(
        settings.kafka_bootstrap_servers,
        Topics.from_settings(settings).measurements,
        len(partitions),
    )
    assert sorted(message.partition for message in received) == sorted(partitions)
    assert assert_envelopes_on_account_partitions(received) == SENT


def as_csv(measurements: list[dict[str, Any]]) -> bytes:
    rows = ["uid,meter,account,ts,measure.calls,measure.bytes,who.user"]
    for m in measurements:
        measure, who = m["measure"], m["who"]
        rows.append(
            f"{m['uid']},{m['meter']},{m['account']},{m['ts']},"
            f"{measure['calls']},{measure['bytes']},{who['user']}"
        )
    return "\n".join(rows).encode()


UPLOADS: dict[str, Callable[[list[dict[str, Any]]], bytes]] = {
    "text/csv": as_csv,
    "application/x-ndjson": lambda ms: b"\n".join(orjson.dumps(m) for m in ms),
    "application/json": lambda ms: orjson.dumps(ms),
}


@pytest.mark.parametrize("content_type", list(UPLOADS))
async def test_an_uploaded_file_lands_in_kafka_on_the_account_partitions(
    client: httpx.AsyncClient, settings: Settings, content_type: str
) -> None:
    response = await client.post(
        f"/organizations/{ORG}/fileuploads/measurements",
        content=UPLOADS[content_type](SENT),
        headers={**AUTH, "Content-Type": content_type},
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(SENT)
    partitions = {partition_for(m["account"], PARTITIONS) for m in SENT}
    received = consume(
        settings.kafka_bootstrap_servers,
        Topics.from_settings(settings).measurements,
        len(partitions),
    )
    assert assert_envelopes_on_account_partitions(received) == SENT


def test_the_producer_helper_agrees_with_a_murmur2_producer_keyed_by_account(
    kafka_bootstrap: str, unique: str
) -> None:
    helper_topic = Topics(f"h{unique}.", PARTITIONS).resolve(MEASUREMENTS)
    keyed_topic = Topics(f"k{unique}.", PARTITIONS).resolve(MEASUREMENTS)
    create_topics(kafka_bootstrap, [helper_topic, keyed_topic])
    accounts = [f"cus_{n:04d}" for n in range(64)]
    sent = [measurement(n, account) for n, account in enumerate(accounts)]

    with MeasurementProducer(kafka_bootstrap, helper_topic.name, PARTITIONS, batch_size=10) as out:
        for m in sent:
            out.send(m)
    keyed = new_producer(kafka_bootstrap)  # partitioner=murmur2_random, no explicit partition
    for m in sent:
        key, value = encode_measurement(m)
        keyed.produce(keyed_topic.name, value=value, key=key)
    assert keyed.flush(30) == 0

    by_key = {
        message.key.decode(): message.partition
        for message in consume(kafka_bootstrap, keyed_topic.name, len(sent))
    }
    per_partition = Counter(partition_for(a, PARTITIONS) for a in accounts)
    batches = sum(math.ceil(count / 10) for count in per_partition.values())
    envelopes = consume(kafka_bootstrap, helper_topic.name, batches)
    by_helper = {
        m["account"]: message.partition
        for message in envelopes
        for m in message.value["measurements"]
    }
    assert len(set(by_key.values())) == PARTITIONS  # the accounts really spread out
    assert by_helper == by_key
