"""The local broker launcher: real Apache Kafka from the cached official jars."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from connectors.kafka.admin import create_topics
from connectors.kafka.broker import BrokerError, LocalKafka, free_port
from connectors.kafka.producer import new_producer
from streams.topics import Topics
from tests.conftest import cache_dir
from tests.support import value_of

pytestmark = pytest.mark.integration


def _round_trip(bootstrap: str, topic: str) -> bytes:
    create_topics(bootstrap, [Topics(prefix=f"{topic}.").resolve(Topics().all()[0].spec)])
    name = f"{topic}.stripe.events"
    producer = new_producer(bootstrap)
    token = uuid.uuid4().hex.encode()
    producer.produce(name, key=b"cus_1", value=token)
    assert producer.flush(15) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": token.decode(),
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([name])
    try:
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                return value_of(message)
    finally:
        consumer.close()
    raise AssertionError("message did not come back")


def test_broker_starts_serves_stops_and_restarts_from_the_cache(tmp_path: Path) -> None:
    broker = LocalKafka(port=free_port(), data_dir=tmp_path / "kafka", cache_dir=cache_dir())
    status = broker.start(timeout=120)
    try:
        assert status.running and status.reachable
        first = _round_trip(broker.bootstrap, "first")
        assert len(first) == 32
        assert broker.stop() is True
        assert broker.status().running is False
        assert broker.jars.cached, "the jars stay cached after the first start"
        jar_times = {p.name: p.stat().st_mtime for p in broker.jars.libs.glob("*.jar")}
        broker.start(timeout=120)
        assert {p.name: p.stat().st_mtime for p in broker.jars.libs.glob("*.jar")} == jar_times
        # The storage survives a restart: the topic and its message are still there.
        assert _round_trip(broker.bootstrap, "first") in {
            first,
            _round_trip(broker.bootstrap, "second"),
        }
    finally:
        broker.stop()


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = LocalKafka(port=port, data_dir=tmp_path, cache_dir=cache_dir())
        with pytest.raises(BrokerError, match=f"port {port} is taken"):
            broker.start()


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    broker = LocalKafka(port=free_port(), data_dir=tmp_path / "k", cache_dir=cache_dir())
    with pytest.raises(BrokerError, match="java not found on PATH"):
        broker.start()


def test_missing_maven_is_a_clear_error_when_nothing_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    java = Path(os.path.realpath(_which("java"))).parent
    monkeypatch.setenv("PATH", str(java))
    broker = LocalKafka(
        port=free_port(), data_dir=tmp_path / "k", cache_dir=tmp_path / "empty-cache"
    )
    with pytest.raises(BrokerError, match="mvn not found on PATH"):
        broker.start()


def _which(tool: str) -> str:
    import shutil

    path = shutil.which(tool)
    assert path is not None
    return path
