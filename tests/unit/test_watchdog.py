"""A wedged worker is told apart from an idle or a busy one."""

from __future__ import annotations

from streams.watchdog import Watchdog, describe


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def watchdog(clock: Clock, **ends: int) -> Watchdog:
    return Watchdog(
        stall_after_s=60,
        send_after_s=30,
        clock=clock,
        agents={"bill.commands": "billing", "measurements": "usage"},
        highwater=lambda topic, partition: ends.get(f"{topic}[{partition}]"),
    )


def test_an_idle_worker_is_never_stalled() -> None:
    clock = Clock()
    dog = watchdog(clock, **{"bill.commands[3]": 5})
    dog.delivered("bill.commands", 3, 4)
    dog.acked("bill.commands", 3, 4)
    clock.now += 3_600
    assert dog.stalls() == []


def test_an_agent_holding_an_event_past_the_bound_is_stalled_and_named() -> None:
    clock = Clock()
    dog = watchdog(clock)
    dog.delivered("bill.commands", 3, 7)
    clock.now += 59
    assert dog.stalls() == []
    clock.now += 2
    [stall] = dog.stalls()
    assert stall.kind == "agent"
    assert stall.what == "billing agent has not acknowledged bill.commands[3]@7"
    assert stall.seconds == 61


def test_the_stall_clock_starts_when_work_arrives_at_an_idle_agent() -> None:
    clock = Clock()
    dog = watchdog(clock)
    dog.acked("bill.commands", 3, 4)
    clock.now += 500  # idle
    dog.delivered("bill.commands", 3, 5)
    clock.now += 10
    assert dog.stalls() == []


def test_a_busy_agent_that_keeps_acknowledging_is_not_stalled() -> None:
    clock = Clock()
    dog = watchdog(clock)
    for offset in range(100):
        dog.delivered("measurements", 0, offset + 1)
        dog.acked("measurements", 0, offset)
        clock.now += 5
    assert dog.stalls() == []


def test_input_lag_that_never_reaches_the_agent_is_stalled() -> None:
    clock = Clock()
    dog = watchdog(clock, **{"measurements[2]": 50})
    dog.delivered("measurements", 2, 9)
    dog.acked("measurements", 2, 9)
    clock.now += 61
    [stall] = dog.stalls()
    assert stall.kind == "input"
    assert "measurements[2] has 40 messages after @9" in stall.what
    assert list(dog.lag()) == [("measurements", 2, 40)]


def test_topics_no_agent_reads_are_ignored() -> None:
    clock = Clock()
    dog = watchdog(clock)
    dog.delivered("meterline-usage-changelog", 0, 10)  # recovery reads, never acks
    clock.now += 600
    assert dog.stalls() == []


def test_a_send_kafka_does_not_acknowledge_is_stalled_until_it_is() -> None:
    clock = Clock()
    dog = watchdog(clock)
    first = dog.send_started("meterline-billindex-changelog")
    clock.now += 10
    dog.send_started("bills")
    clock.now += 25
    [stall] = dog.stalls()
    assert stall.kind == "send"
    assert stall.what == (
        "1 sends not acknowledged by Kafka, the oldest to meterline-billindex-changelog"
    )
    assert dog.sends_pending() == 2
    dog.send_finished(first)
    assert dog.stalls() == []


def test_a_send_that_failed_no_longer_counts() -> None:
    clock = Clock()
    dog = watchdog(clock)
    dog.send_finished(dog.send_started("bills"))  # faust reports errors like completions
    clock.now += 600
    assert dog.stalls() == []
    assert dog.sends_pending() == 0


def test_a_commit_that_does_not_finish_is_stalled() -> None:
    clock = Clock()
    dog = watchdog(clock)
    dog.commit_started()
    clock.now += 31
    assert [s.kind for s in dog.stalls()] == ["commit"]
    dog.commit_finished()
    assert dog.stalls() == []


def test_a_rebalance_forgets_offsets_and_a_stuck_one_is_stalled() -> None:
    clock = Clock()
    dog = watchdog(clock)
    dog.delivered("bill.commands", 1, 3)
    dog.rebalance_started()
    clock.now += 61
    assert [s.kind for s in dog.stalls()] == ["rebalance"]
    dog.rebalance_finished()
    assert dog.stalls() == []


def test_at_stop_time_everything_still_pending_is_described() -> None:
    clock = Clock()
    dog = watchdog(clock)
    dog.acked("bill.commands", 3, 4)
    dog.delivered("bill.commands", 3, 5)
    dog.delivered("bill.commands", 3, 6)
    dog.send_started("bills")
    clock.now += 2
    text = describe(dog.stalls(longer_than=0))
    assert "billing agent has not acknowledged bill.commands[3]@5 for 2s" in text
    assert "the oldest to bills for 2s" in text
