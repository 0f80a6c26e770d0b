"""Commits of `stripe.events` reach its end, and a partition whose commits stop below
messages the agent has done is reported by /healthz.

The worker runs with a startup hook (a `sitecustomize` on its PYTHONPATH):
- one that swallows a fetched record on its way to the stream, after faust's fetch
  bookkeeping saw it, so it is neither a gap nor read again: the agent goes on with the
  later ones and the consumer never commits past it;
- one that makes the event loop come back to faust's recovery a second late after the
  seek to the committed offsets, as on a loaded machine, before recovery clears the
  streams' queues.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.stack import Stack
from tests.support import eventually
from tests.unit import stripe_payloads as sp

pytestmark = pytest.mark.integration
DROPPED_OFFSET = 2

SWALLOW_HOOK = """
import os

from streams.commits import InOrderConsumer

topic, partition, offset = os.environ["METERLINE_TEST_SWALLOW"].split(":")
where = (topic, int(partition), int(offset))
original = InOrderConsumer.__init__


def __init__(self, *args, **kwargs):
    original(self, *args, **kwargs)
    callback = self.callback

    async def swallow_one(message):
        if (message.topic, message.partition, message.offset) == where:
            return None  # fetched, never handed to a stream
        return await callback(message)

    self.callback = swallow_one


InOrderConsumer.__init__ = __init__
"""

SLOW_SEEK_HOOK = """
import asyncio

from faust.transport import consumer

original = consumer.Consumer.perform_seek


async def perform_seek(self):
    await original(self)
    await asyncio.sleep(1.0)


consumer.Consumer.perform_seek = perform_seek
"""


def customers(count: int) -> list[bytes]:
    return [
        orjson.dumps(
            sp.event("customer.created", sp.customer(f"cus_{n}"), created=sp.T0, id=f"evt_{n}")
        )
        for n in range(count)
    ]


def stalls(stack: Stack) -> list[dict[str, Any]] | None:
    try:
        answer = httpx.get(f"{stack.worker_url}/healthz", timeout=5)
    except httpx.HTTPError:
        return None
    found = [stall for stall in answer.json().get("stalls", []) if stall["kind"] == "committed"]
    return found if answer.status_code == 503 and found else None


def test_commits_stopped_below_events_the_accounts_agent_applied_turn_healthz_to_stalled(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stack = Stack(kafka_bootstrap, tmp_path, partitions=1, METERLINE_WORKER_STALL_TIMEOUT_S="3")
    topic = stack.topics.stripe_events
    stack.hook_worker_start(SWALLOW_HOOK)
    stack.env["METERLINE_TEST_SWALLOW"] = f"{topic}:0:{DROPPED_OFFSET}"
    stack.start_worker()
    try:
        stack.produce(topic, "cus", customers(6))
        [stall] = eventually(lambda: stalls(stack), timeout=60)
        assert stall["what"].startswith(f"commits stopped at {topic}[0]@{DROPPED_OFFSET} "), stall
        assert "4 messages after it" in stall["what"]
        text = httpx.get(f"{stack.worker_url}/metrics", timeout=5).text
        assert f'kind="committed",partition="0",topic="{topic}"' in text
    finally:
        stack.stop()


def test_a_backlog_of_stripe_events_read_by_a_slow_starting_worker_is_committed_to_its_end(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stack = Stack(kafka_bootstrap, tmp_path, partitions=1)
    topic = stack.topics.stripe_events
    stack.hook_worker_start(SLOW_SEEK_HOOK)
    stack.produce(topic, "cus", customers(400))
    group = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": stack.env["METERLINE_APP_ID"],
            "enable.auto.commit": False,
        }
    )

    def committed() -> int:
        [position] = group.committed([TopicPartition(topic, 0)], timeout=10)
        return int(position.offset)

    stack.start_worker()
    try:
        try:
            eventually(lambda: committed() == 400, timeout=60)
        except TimeoutError:
            raise AssertionError(f"committed {topic}[0]@{committed()} of 400") from None
    finally:
        group.close()
        stack.stop()
