"""No loss, no double count: usage stays exact while measurements arrive at full speed and
the worker is SIGKILLed, or the broker restarts, in the middle of it.

A thread produces measurements to `measurements` as fast as the producer goes
(`tests.durability.FullSpeedLoad`): envelopes of 100 and single-measurement messages,
5 % of measurements repeating an earlier uid, 1 % of messages delivered twice, every
aggregation function of the example catalog. Afterwards the usage query API must answer,
per account and aggregation, exactly what the distinct uids add up to (value and count).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.kafka.broker import LocalKafka
from tests.durability import (
    FullSpeedLoad,
    LoadShape,
    Moment,
    all_accounts,
    differences,
    kill_worker,
    progressed,
    recent_hours,
    usage,
    wait_recovered,
)
from tests.fixtures.stack import StackOptions
from tests.stack import Positions, Stack, broker_down, fresh_broker
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.durability]

PARTITIONS = 3
HOURS = 4
ACCOUNTS = all_accounts(200, odd=("cus3|eu", "züri-😀"))
# measurements waiting before the worker first starts: enough that its first batches
# leave it far behind when it is killed as soon as it has made progress
BACKLOG = 60_000
WAVE = 10_000  # measurements arriving at full speed while each worker runs
STACK = StackOptions(partitions=PARTITIONS, worker=False, http=False)


def shape() -> LoadShape:
    return LoadShape(accounts=ACCOUNTS, start_ms=recent_hours(HOURS), hours=HOURS)


def assert_usage_is_exact(stack: Stack, load: FullSpeedLoad, what: str) -> None:
    expected = load.ledger.expected()
    accounts = list(ACCOUNTS)
    start = load.shape.start_ms

    def exact() -> bool:
        return usage(stack, accounts, start, HOURS) == expected

    try:
        eventually(exact, timeout=60, interval=0.5, what="the usage to equal the ledger")
    except TimeoutError:
        answered = usage(stack, accounts, start, HOURS)
        raise AssertionError(f"after {what}: {differences(expected, answered)}") from None


def test_usage_equals_the_distinct_uid_totals_after_sigkills_during_full_speed_ingest(
    stack: Stack,
) -> None:
    positions = Positions(stack)
    rng = random.Random(13)
    try:
        with FullSpeedLoad(stack.bootstrap, stack.topics.measurements, PARTITIONS, shape()) as load:
            load.burst(BACKLOG)
            load.settle()  # the first worker starts far behind
            kills = []
            for moment in (Moment.FIRST_PROGRESS, Moment.COMMIT_ADVANCE, Moment.RANDOM):
                load.burst(WAVE)  # arrives while the worker starts and runs
                kills.append(kill_worker(stack, positions, moment, rng))
            counts = load.settle()
        stack.start_worker()
        wait_recovered(stack, positions, timeout=120)
        stack.start_http()
        assert_usage_is_exact(stack, load, "; ".join(kill.describe() for kill in kills))
    finally:
        positions.close()
    far_behind = kills[0]
    assert far_behind.lag_messages >= far_behind.end_messages // 2, far_behind.describe()
    assert counts.duplicates and counts.redelivered and counts.acknowledged > BACKLOG + 3 * WAVE


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafka]:
    with fresh_broker(tmp_path / "kafka") as kafka:
        yield kafka


@pytest.mark.parametrize("crash", [False, True], ids=["controlled-shutdown", "sigkill"])
def test_usage_equals_the_distinct_uid_totals_after_a_broker_restart_during_full_speed_ingest(
    broker: LocalKafka, tmp_path: Path, crash: bool
) -> None:
    stack = Stack(broker.bootstrap, tmp_path, partitions=PARTITIONS)
    positions = Positions(stack)
    try:
        with FullSpeedLoad(stack.bootstrap, stack.topics.measurements, PARTITIONS, shape()) as load:
            load.burst(BACKLOG)
            load.settle()
            stack.start_worker()
            load.burst(WAVE)
            eventually(lambda: progressed(stack, positions, 0), timeout=60, interval=0.01)
            behind = positions.end() - positions.committed()
            with broker_down(broker, crash=crash):
                load.burst(WAVE)  # produced into the producer's queue, delivered on restart
            load.burst(WAVE)
            counts = load.settle()
        assert stack.worker.alive(), stack.worker.log_tail()
        wait_recovered(stack, positions, timeout=120)
        stack.start_http()
        what = f"a broker {'SIGKILL' if crash else 'stop'} {behind:,} messages behind"
        assert_usage_is_exact(stack, load, what)
    finally:
        positions.close()
        stack.stop()
    assert behind > 0, "the worker had caught up before the broker stopped"
    assert counts.acknowledged > BACKLOG + 3 * WAVE
