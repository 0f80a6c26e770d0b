"""A partition whose commits stop below messages the agent has done is reported by /healthz.

faust can fetch a record and never hand it to the agent (it drops it on its way to the
stream): the agent goes on with the later ones, the consumer never commits past the
dropped one, and nothing else notices. The worker here runs with a startup hook (a
`sitecustomize` on its PYTHONPATH) that swallows one fetched record of `stripe.events`
the same way, after faust's fetch bookkeeping saw it, so the record is neither a gap nor
read again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.stack import Stack
from tests.support import eventually
from tests.unit import stripe_payloads as sp

pytestmark = pytest.mark.integration
DROPPED_OFFSET = 2

HOOK = """
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
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    stack = Stack(kafka_bootstrap, tmp_path, partitions=1, METERLINE_WORKER_STALL_TIMEOUT_S="3")
    topic = stack.topics.stripe_events
    stack.env["PYTHONPATH"] = os.pathsep.join(
        [str(hook), *filter(None, [stack.env.get("PYTHONPATH")])]
    )
    stack.env["METERLINE_TEST_SWALLOW"] = f"{topic}:0:{DROPPED_OFFSET}"
    stack.start_worker()
    try:
        events = [
            orjson.dumps(
                sp.event("customer.created", sp.customer(f"cus_{n}"), created=sp.T0, id=f"evt_{n}")
            )
            for n in range(6)
        ]
        stack.produce(topic, "cus", events)
        [stall] = eventually(lambda: stalls(stack), timeout=60)
        assert stall["what"].startswith(f"commits stopped at {topic}[0]@{DROPPED_OFFSET} "), stall
        assert "4 messages after it" in stall["what"]
        text = httpx.get(f"{stack.worker_url}/metrics", timeout=5).text
        assert f'kind="committed",partition="0",topic="{topic}"' in text
    finally:
        stack.stop()
