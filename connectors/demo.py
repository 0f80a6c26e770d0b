"""The main job: the whole pipeline on a local broker, driven through public interfaces."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console

from connectors.dev import DevStack
from connectors.kafka.producer import new_producer
from streams.settings import Settings
from streams.topics import Topics


def kafka_round_trip(bootstrap: str, topic: str, timeout: float = 30.0) -> float:
    """Produce one message and read it back; return the round trip in seconds."""
    token = uuid.uuid4().hex.encode()
    started = time.monotonic()
    producer = new_producer(bootstrap)
    producer.produce(topic, key=b"demo", value=token)
    if producer.flush(timeout) != 0:
        raise RuntimeError(f"Kafka did not acknowledge the write to {topic}")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-{token.decode()}"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout)
        consumer.assign([TopicPartition(topic, 0, max(low, high - 100))])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error() and message.value() == token:
                return time.monotonic() - started
    finally:
        consumer.close()
    raise RuntimeError(f"the message written to {topic} did not come back within {timeout:.0f}s")


def run_demo(settings: Settings, broker_port: int = 9092) -> int:
    console = Console()
    stack = DevStack(settings, console=console, broker_port=broker_port, quiet=True)
    try:
        stack.start_kafka(use_existing="kafka_bootstrap_servers" in settings.model_fields_set)
        stack.create_topics()
        stack.add_defaults()
        stack.spawn()
        with console.status("waiting for worker, HTTP edge and Stripe sink to be healthy…"):
            stack.wait_healthy()
        console.print(stack.status_table())
        seconds = kafka_round_trip(stack.bootstrap(), Topics.from_settings(settings).heartbeat)
        console.print(f"[green]round trip through Kafka in {seconds * 1000:.0f} ms[/]")
        return 0
    finally:
        stack.stop()
