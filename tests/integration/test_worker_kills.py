"""Acknowledged usage survives a worker SIGKILLed right after it committed offsets,
and a restart recovers it from the usage log (snapshot segments and the deltas after).

The worker once committed offsets while its usage changelog writes still sat in the
producer's buffer; a SIGKILL at that moment lost the usage for good. Here the worker
folds a backlog at full speed (every batch writes hundreds of account-hour records)
and is killed the moment its committed position moves, several times; afterwards every
account's total equals the total of its distinct uids, exactly. Accounts with codes
that once broke keys (`|`, `%`, unicode, 200 characters) are part of the load.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import pytest

from connectors.kafka.broker import KafkaJars
from connectors.kafka.measurements import MeasurementProducer
from streams.settings import Settings
from tests.conftest import cache_dir
from tests.fixtures.stack import StackOptions
from tests.stack import Positions, Stack
from tests.support import eventually

pytestmark = pytest.mark.integration

PARTITIONS = 3
KILLS = 3
HOURS = 4
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS)
ODD_ACCOUNTS = ["cus3|eu", "a|b|c", "100%", "züri-😀", "x" * 200]
ACCOUNTS = [f"acct-{i:03d}" for i in range(195)] + ODD_ACCOUNTS


STACK = StackOptions(partitions=PARTITIONS, worker=False, http=False)


def workload(count: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, Decimal]]:
    """Measurements over a few hours, 5 % of them repeated uids."""
    rng = random.Random(seed)
    measurements: list[dict[str, Any]] = []
    expected = dict.fromkeys(ACCOUNTS, Decimal(0))
    for i in range(count):
        account = rng.choice(ACCOUNTS)
        calls = rng.randint(1, 1000)
        ts = START + timedelta(seconds=rng.randrange(HOURS * 3600))
        document: dict[str, Any] = {
            "uid": f"k{seed}-{i}",
            "meter": "api",
            "account": account,
            "ts": ts.isoformat(),
            "who": {"user": f"u{i % 50}"},
            "measure": {"calls": calls},
        }
        measurements.append(document)
        expected[account] += calls
        if rng.random() < 0.05:
            measurements.append(document)  # a producer retry: the same uid again
    return measurements, expected


WORKER_CLIENT_ID = "faust-0.15.3"  # faust's default client id, the worker's producer


def produce_quota(bootstrap: str, bytes_per_s: int | None) -> None:
    """Throttle (or stop throttling) the worker's producer on the broker: a Kafka client
    quota makes its changelog writes queue up, the back-pressure under which the commit
    once raced ahead of them."""
    import faust

    assert f"faust-{faust.__version__}" == WORKER_CLIENT_ID
    libs = KafkaJars(Settings().kafka_version, cache_dir()).ensure()
    change = (
        ["--add-config", f"producer_byte_rate={bytes_per_s}"]
        if bytes_per_s
        else ["--delete-config", "producer_byte_rate"]
    )
    subprocess.run(
        [
            "java",
            "-cp",
            f"{libs}/*",
            "kafka.admin.ConfigCommand",
            "--bootstrap-server",
            bootstrap,
            "--alter",
            "--entity-type",
            "clients",
            "--entity-name",
            WORKER_CLIENT_ID,
            *change,
        ],
        check=bool(bytes_per_s),  # deleting a quota that is not set is an error: fine
        capture_output=True,
        timeout=60,
    )


def totals(stack: Stack) -> dict[str, Decimal] | None:
    with stack.client() as client:
        answer = client.post(
            f"{stack.api}/usage/query",
            json={
                "startDate": (START - timedelta(hours=1)).isoformat(),
                "endDate": (START + timedelta(hours=HOURS + 1)).isoformat(),
                "accountIds": ACCOUNTS,
                "aggregations": ["api_calls"],
            },
        )
    if answer.status_code != 200:
        return None
    out = dict.fromkeys(ACCOUNTS, Decimal(0))
    for row in answer.json()["data"]:
        out[row["accountId"]] = Decimal(row["value"])
    return out


def test_usage_is_exact_after_sigkills_right_after_offset_commits(stack: Stack) -> None:
    # envelopes of 100, as the ingest API writes them: every batch of the worker then
    # rewrites most account-hour records, the load under which the commit raced ahead
    # snapshot rounds every second: kills land between a round's steps too, and the
    # restarts recover from segments, markers and the deltas after them
    stack.env["METERLINE_USAGE_SNAPSHOT_INTERVAL_S"] = "1"
    # batches of 50 envelopes (5,000 measurements): the backlog takes two dozen batches,
    # so the committed position moves many times
    stack.env["METERLINE_USAGE_BATCH_MESSAGES"] = "50"
    measurements, expected = workload(120_000, seed=11)
    with MeasurementProducer(stack.bootstrap, stack.topics.measurements, PARTITIONS) as out:
        for measurement in measurements:
            out.send(measurement)
    positions = Positions(stack)
    # the usage log takes a few bytes per measurement (compressed deltas): a tight quota
    # keeps the worker behind long enough to be killed several times
    produce_quota(stack.bootstrap, 16 * 1024)
    try:
        end = positions.end()
        kills_done = 0
        for _ in range(KILLS):
            before = positions.committed()
            if before >= end:
                break
            stack.start_worker()
            # kill the moment the group's committed position moves (the commit landed
            # while the batches after it were still being written)
            eventually(partial(positions.moved_past, before), timeout=90, interval=0.02)
            stack.worker.stop(signal.SIGKILL)
            kills_done += 1
        assert kills_done >= 2, "the backlog was folded before the worker could be killed twice"
        produce_quota(stack.bootstrap, None)
        stack.start_worker()
        stack.start_http()
        eventually(lambda: positions.committed() >= end, timeout=240, interval=0.5)
        eventually(lambda: totals(stack) == expected, timeout=60, interval=0.5)
        assert totals(stack) == expected
    finally:
        produce_quota(stack.bootstrap, None)
        positions.close()


def test_odd_account_codes_keep_their_usage_across_a_restart(stack: Stack) -> None:
    before = totals(stack)
    assert before is not None and all(before[code] > 0 for code in ODD_ACCOUNTS)
    log = stack.worker.log_path
    eventually(lambda: "usage snapshot of" in log.read_text(errors="replace"), timeout=30)
    stack.worker.stop()
    started = time.monotonic()
    stack.start_worker()
    eventually(lambda: totals(stack) == before, timeout=90, interval=0.5)
    assert time.monotonic() - started < 90
