"""A wedged worker is visible: /healthz and /metrics say what is stuck; its stop is bounded.

The worker gets a broker of its own, which the test pauses (SIGSTOP): the worker stays
alive and keeps answering HTTP while every send it makes (the bill-run ticks, one per
second here) waits for an acknowledgement that does not come.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.kafka.broker import LocalKafka
from connectors.worker import EXIT_STOP_TIMEOUT
from tests.stack import Stack, fresh_broker
from tests.support import eventually

pytestmark = pytest.mark.integration
STOP_TIMEOUT_S = 5


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafka]:
    with fresh_broker(tmp_path / "kafka") as kafka:
        yield kafka


def health(stack: Stack) -> tuple[int, dict[str, Any]]:
    try:
        answer = httpx.get(f"{stack.worker_url}/healthz", timeout=5)
    except httpx.HTTPError:
        return 0, {}
    return answer.status_code, answer.json()


def body_when(status: int, stack: Stack) -> dict[str, Any] | None:
    """The health body once the worker answers `status`, else None."""
    answered, body = health(stack)
    return body if answered == status else None


def metrics(stack: Stack) -> dict[str, float]:
    text = httpx.get(f"{stack.worker_url}/metrics", timeout=5).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_a_worker_whose_sends_kafka_never_acknowledges_turns_unhealthy_and_stops_in_bounded_time(
    broker: LocalKafka, tmp_path: Path
) -> None:
    stack = Stack(
        broker.bootstrap,
        tmp_path,
        METERLINE_BILL_RUN_INTERVAL_S="1",
        METERLINE_WORKER_SEND_TIMEOUT_S="3",
        METERLINE_WORKER_STALL_TIMEOUT_S="5",
        METERLINE_WORKER_STOP_TIMEOUT_S=str(STOP_TIMEOUT_S),
    )
    stack.start_worker()
    try:
        assert health(stack)[0] == 200
        assert metrics(stack)["meterline_worker_healthy"] == 1

        pid = broker.pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        body = eventually(partial(body_when, 503, stack), timeout=30)
        assert body["status"] == "stalled"
        kinds = {stall["kind"] for stall in body["stalls"]}
        assert "send" in kinds, body
        send = next(stall for stall in body["stalls"] if stall["kind"] == "send")
        assert "not acknowledged by Kafka" in send["what"]
        figures = metrics(stack)
        assert figures["meterline_worker_healthy"] == 0
        assert figures["meterline_worker_sends_pending"] > 0
        assert figures["meterline_worker_oldest_send_seconds"] > 3

        started = time.monotonic()
        assert stack.worker.process is not None
        os.killpg(stack.worker.process.pid, signal.SIGTERM)
        returncode = stack.worker.process.wait(STOP_TIMEOUT_S + 15)
        assert time.monotonic() - started < STOP_TIMEOUT_S + 15
        if returncode == EXIT_STOP_TIMEOUT:
            log = stack.worker.log_tail(20)
            assert f"did not stop within {STOP_TIMEOUT_S}s" in log
            assert "not acknowledged by Kafka" in log
    finally:
        stack.stop()
