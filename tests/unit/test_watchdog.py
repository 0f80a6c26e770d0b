"""A wedged worker is told apart from an idle or a busy one."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from streams.watchdog import Watchdog, WatchdogSensor, describe


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


def commit_rounds(dog: Watchdog, clock: Clock, seconds: float, **committed: int) -> None:
    """faust's commit timer: a commit round every 3 s, each reporting the committed offsets."""
    for _ in range(int(seconds // 3)):
        clock.now += 3
        dog.commit_started()
        dog.commit_finished()
        for where, offset in committed.items():
            topic, partition = where.rstrip("]").split("[")
            dog.committed(topic, int(partition), offset)


def test_commits_stopped_below_messages_the_agent_acknowledged_are_stalled_naming_the_offset() -> (
    None
):
    clock = Clock()
    dog = watchdog(clock, **{"bill.commands[2]": 3_300})
    dog.delivered("bill.commands", 2, 3)  # offset 2 was fetched and never handed over
    dog.acked("bill.commands", 2, 3_299)  # every later one was
    commit_rounds(dog, clock, 60, **{"bill.commands[2]": 2})
    assert dog.stalls() == []
    commit_rounds(dog, clock, 6, **{"bill.commands[2]": 2})
    [stall] = dog.stalls()
    assert stall.kind == "committed"
    assert (stall.topic, stall.partition) == ("bill.commands", 2)
    assert stall.what == (
        "commits stopped at bill.commands[2]@2 with 3298 messages after it, "
        "and the billing agent does not hold the one there"
    )
    assert stall.seconds > 60


def test_commits_stopped_while_the_agent_works_on_later_messages_are_stalled() -> None:
    clock = Clock()
    dog = watchdog(clock, **{"bill.commands[2]": 9_000})
    offset = 3
    for _ in range(30):
        dog.delivered("bill.commands", 2, offset + 1)
        dog.acked("bill.commands", 2, offset)
        offset += 1
        commit_rounds(dog, clock, 3, **{"bill.commands[2]": 2})
    assert [stall.kind for stall in dog.stalls()] == ["committed"]


def test_a_committed_offset_that_keeps_advancing_is_not_stalled() -> None:
    clock = Clock()
    dog = watchdog(clock, **{"bill.commands[0]": 10_000})
    for offset in range(0, 300, 3):
        commit_rounds(dog, clock, 3, **{"bill.commands[0]": offset})
    assert dog.stalls() == []


def test_a_new_message_after_a_long_idle_time_is_not_a_stalled_commit() -> None:
    clock = Clock()
    ends = {"bill.commands[0]": 40}
    dog = watchdog(clock)
    dog.highwater = lambda topic, partition: ends.get(f"{topic}[{partition}]")
    dog.acked("bill.commands", 0, 39)
    commit_rounds(dog, clock, 600, **{"bill.commands[0]": 40})
    ends["bill.commands[0]"] = 41
    assert "committed" not in {stall.kind for stall in dog.stalls()}
    commit_rounds(dog, clock, 3, **{"bill.commands[0]": 40})
    assert "committed" not in {stall.kind for stall in dog.stalls()}


def test_an_agent_holding_the_message_at_the_committed_offset_is_an_agent_stall() -> None:
    clock = Clock()
    dog = watchdog(clock, **{"bill.commands[1]": 20})
    dog.delivered("bill.commands", 1, 7)
    commit_rounds(dog, clock, 90, **{"bill.commands[1]": 7})
    assert [stall.kind for stall in dog.stalls()] == ["agent"]


def test_commits_do_not_count_as_stalled_while_a_rebalance_recovers_tables() -> None:
    clock = Clock()
    dog = watchdog(clock, **{"bill.commands[2]": 3_300})
    dog.rebalance_started()
    commit_rounds(dog, clock, 600, **{"bill.commands[2]": 2})
    dog.rebalance_finished()
    commit_rounds(dog, clock, 30, **{"bill.commands[2]": 2})
    assert dog.stalls() == []
    commit_rounds(dog, clock, 36, **{"bill.commands[2]": 2})
    assert [stall.kind for stall in dog.stalls()] == ["committed"]


def test_commits_of_topics_no_agent_reads_are_ignored() -> None:
    clock = Clock()
    dog = watchdog(clock, **{"meterline-usage-changelog[0]": 500})
    commit_rounds(dog, clock, 600, **{"meterline-usage-changelog[0]": 2})
    assert dog.stalls() == []


def test_the_sensor_reads_the_committed_offsets_of_assigned_partitions_after_a_commit() -> None:
    clock = Clock()
    dog = watchdog(clock, **{"bill.commands[2]": 3_300, "bill.commands[3]": 10})
    stuck, gone, fresh = TP("bill.commands", 2), TP("bill.commands", 3), TP("bill.commands", 4)
    consumer = SimpleNamespace(
        assignment=lambda: {stuck, fresh},
        _committed_offset={stuck: 2, gone: 1, fresh: None},
    )
    sensor = WatchdogSensor(dog, app=SimpleNamespace())  # type: ignore[arg-type]
    for _ in range(25):
        clock.now += 3
        sensor.on_commit_completed(consumer, None)
    [stall] = dog.stalls()
    assert stall.what.startswith("commits stopped at bill.commands[2]@2 ")
