"""The worker process: topic problems stop it before it starts; its stop is bounded."""

from __future__ import annotations

import logging
import threading

import pytest

from connectors.kafka.admin import TopicOutcome
from connectors.worker import EXIT_STOP_TIMEOUT, StopDeadline, WorkerTopicsError, check_outcomes
from streams.topics import Topics

TOPICS = Topics(prefix="t.", partitions=6).all()


def outcome(
    name: str, created: bool = False, partitions: int | None = None, problem: str | None = None
) -> TopicOutcome:
    declared = next(t.partitions for t in TOPICS if t.name == name)
    return TopicOutcome(name, created, partitions or declared, problem)


def test_topics_the_worker_had_to_create_are_named_with_the_command_that_creates_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes = [outcome(t.name, created=t.name.endswith("bills")) for t in TOPICS]
    with caplog.at_level(logging.WARNING):
        check_outcomes(TOPICS, outcomes)
    assert "were missing and were created now: t.bills" in caplog.text
    assert "meterline topics create" in caplog.text


def test_a_partition_count_that_breaks_co_partitioning_stops_the_worker() -> None:
    outcomes = [outcome(t.name) for t in TOPICS]
    outcomes[1] = outcome(TOPICS[1].name, partitions=2, problem="has 2 partitions, expected 6")
    with pytest.raises(WorkerTopicsError, match=r"t\.measurements has 2 partitions, expected 6"):
        check_outcomes(TOPICS, outcomes)


def test_a_setting_that_differs_is_reported_but_does_not_stop_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes = [outcome(t.name) for t in TOPICS]
    outcomes[0] = outcome(TOPICS[0].name, problem="has max.message.bytes=1048588, expected 8")
    check_outcomes(TOPICS, outcomes)
    assert "t.stripe.events has max.message.bytes=1048588" in caplog.text


def test_a_stop_that_does_not_finish_in_time_exits_and_says_what_was_stuck(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exited = threading.Event()
    codes: list[int] = []

    def exit(code: int) -> None:
        codes.append(code)
        exited.set()

    deadline = StopDeadline(0.05, lambda: "billing agent has not acknowledged x[3]@5", exit)
    deadline.arm()
    deadline.arm()  # a second signal does not start a second clock
    assert exited.wait(5)
    assert codes == [EXIT_STOP_TIMEOUT]
    assert "did not stop within 0s" in caplog.text
    assert "billing agent has not acknowledged x[3]@5" in caplog.text


def test_nothing_happens_before_the_deadline() -> None:
    exited = threading.Event()
    StopDeadline(30, lambda: "", lambda code: exited.set()).arm()
    assert not exited.wait(0.1)
