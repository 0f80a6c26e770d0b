"""Usage durability at volume: measurements acknowledged vs counted after the worker is
SIGKILLed many times, and after a broker restart, during full-speed ingest.

    .venv/bin/python -m bench.bench_durability [--measurements 400000] [--kills 6]
        [--accounts 2000] [--only kills,broker]

The larger sibling of tests/integration/test_usage_durability.py, built from the same
parts (`tests.durability`): a thread produces measurements to `measurements` as fast as
the producer goes (envelopes of 100 and single messages, 5 % repeated uids, 1 % of
messages delivered twice, every aggregation function of the example catalog, ts over the
last 4 hours), and the ledger of distinct uids says what the usage query API must
answer per account and aggregation (value and count).

- kills: 40 % of the measurements wait before the first worker starts; before each of
  `--kills` restarts another share arrives at full speed; each worker is SIGKILLed at a
  moment that cycles through: as soon as it made progress (far behind), right after its
  group's committed position moved, at a random moment. A last worker then catches up.
- broker: a broker of its own (so the shared one is left alone); half the measurements
  wait, a worker starts, a quarter arrives, the broker is SIGKILLed once the worker made
  progress, a quarter more is produced while it is down, and it starts again.

Printed: measurements acknowledged (repeats and redeliveries included), distinct, and
counted by the usage query; the (account, aggregation) pairs that differ (target 0);
every kill (how far behind, start-up to ready); the time to recover (ready → caught up
after the last kill; broker back → worker caught up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import kafka
from tests.durability import (
    FullSpeedLoad,
    LoadShape,
    Moment,
    Usage,
    all_accounts,
    differences,
    kill_worker,
    measurements_counted,
    progressed,
    recent_hours,
    usage,
    wait_recovered,
)
from tests.stack import Positions, Stack, broker_down, fresh_broker
from tests.support import eventually

PARTITIONS = 6
HOURS = 4
MOMENTS = (Moment.FIRST_PROGRESS, Moment.COMMIT_ADVANCE, Moment.RANDOM)


def run_kills(
    bootstrap: str, *, measurements: int = 400_000, kills: int = 6, accounts: int = 2_000
) -> dict[str, Any]:
    """The worker SIGKILLed `kills` times during full-speed ingest on the given broker."""
    backlog = measurements * 2 // 5
    wave = (measurements - backlog) // kills
    codes = all_accounts(accounts)
    rng = random.Random(kills)
    with tempfile.TemporaryDirectory(prefix="bench-durability-") as tmp:
        stack = Stack(bootstrap, Path(tmp), partitions=PARTITIONS)
        positions = Positions(stack)
        shape = LoadShape(accounts=codes, start_ms=recent_hours(HOURS), hours=HOURS)
        try:
            with FullSpeedLoad(bootstrap, stack.topics.measurements, PARTITIONS, shape) as load:
                load.burst(backlog)
                load.settle(300)
                done = []
                for k in range(kills):
                    load.burst(wave)
                    done.append(kill_worker(stack, positions, MOMENTS[k % len(MOMENTS)], rng))
                load.settle(300)
            started = time.monotonic()
            stack.start_worker()
            ready_s = time.monotonic() - started
            catch_up_s = wait_recovered(stack, positions, timeout=900)
            stack.start_http()
            result = _compare(stack, load, codes)
        finally:
            positions.close()
            stack.stop()
    result.update(
        kills=[kill.describe() for kill in done],
        kills_far_behind=sum(kill.lag_messages * 2 >= kill.end_messages for kill in done),
        last_start_to_ready_s=round(ready_s, 1),
        recover_s=round(catch_up_s, 1),
    )
    return result


def run_broker_restart(
    *, measurements: int = 200_000, accounts: int = 2_000, crash: bool = True
) -> dict[str, Any]:
    """A broker restart (SIGKILL by default) during full-speed ingest, on a broker of its own."""
    codes = all_accounts(accounts)
    with (
        tempfile.TemporaryDirectory(prefix="bench-durability-broker-") as tmp,
        fresh_broker(Path(tmp) / "kafka") as broker,
    ):
        stack = Stack(broker.bootstrap, Path(tmp), partitions=PARTITIONS)
        positions = Positions(stack)
        shape = LoadShape(accounts=codes, start_ms=recent_hours(HOURS), hours=HOURS)
        topic = stack.topics.measurements
        try:
            with FullSpeedLoad(broker.bootstrap, topic, PARTITIONS, shape) as load:
                load.burst(measurements // 2)
                load.settle(300)
                stack.start_worker()
                load.burst(measurements // 4)
                eventually(lambda: progressed(stack, positions, 0), timeout=120, interval=0.01)
                behind = positions.end() - positions.committed()
                stopped = time.monotonic()
                with broker_down(broker, crash=crash):
                    load.burst(measurements - measurements // 2 - measurements // 4)
                back = time.monotonic()
                load.settle(300)
            alive = stack.worker.alive()
            if not alive:  # as a supervisor would
                stack.start_worker()
            wait_recovered(stack, positions, timeout=900)
            catch_up_s = time.monotonic() - back  # from the broker's return
            stack.start_http()
            result = _compare(stack, load, codes)
        finally:
            positions.close()
            stack.stop()
    result.update(
        broker_stop="SIGKILL" if crash else "controlled shutdown",
        messages_behind_at_stop=behind,
        broker_down_s=round(back - stopped, 1),
        worker_survived=alive,
        recover_s=round(catch_up_s, 1),
    )
    return result


def _compare(stack: Stack, load: FullSpeedLoad, codes: tuple[str, ...]) -> dict[str, Any]:
    """Poll the usage query API (up to 60 s) until it equals the ledger; what it answered."""
    expected = load.ledger.expected()
    accounts = list(codes)
    answers: list[Usage | None] = []

    def exact() -> bool:
        answers.append(usage(stack, accounts, load.shape.start_ms, HOURS))
        return answers[-1] == expected

    with contextlib.suppress(TimeoutError):  # the figures say how far off it is
        eventually(exact, timeout=60, interval=1.0)
    answer = answers[-1]
    wrong = (
        None  # the usage query did not answer
        if answer is None
        else sum(expected.get(key) != answer.get(key) for key in set(expected) | set(answer))
    )
    counts = load.counts
    return {
        "measurements": counts.measurements,
        "acknowledged": counts.acknowledged,
        "messages": counts.messages,
        "repeated_uids": counts.duplicates,
        "redelivered_messages": counts.redelivered,
        "retried_messages": counts.retried,
        "distinct": len(load.ledger.uids),
        "counted": measurements_counted(answer or {}),
        "pairs": len(expected),
        "pairs_wrong": wrong,
        "exact": wrong == 0,
        "differences": "" if wrong == 0 else differences(expected, answers[-1]),
    }


def describe(label: str, r: dict[str, Any]) -> str:
    lines = [
        f"{label}: {r['acknowledged']:,} measurements acknowledged in {r['messages']:,} messages "
        f"({r['repeated_uids']:,} repeated uids, {r['redelivered_messages']:,} messages "
        f"redelivered, {r['retried_messages']:,} produced again after a failed delivery)",
        f"  distinct {r['distinct']:,}, counted by the usage query {r['counted']:,}; "
        f"{r['pairs_wrong'] if r['pairs_wrong'] is not None else 'all'} of {r['pairs']:,} "
        "(account, aggregation) pairs differ"
        + (" (exact)" if r["exact"] else f": {r['differences']}"),
        f"  time to recover: {r['recover_s']} s",
    ]
    lines.extend(f"  kill {kill}" for kill in r.get("kills", []))
    if "broker_stop" in r:
        lines.append(
            f"  broker stopped by {r['broker_stop']} with the worker "
            f"{r['messages_behind_at_stop']:,} messages behind, down {r['broker_down_s']} s; "
            f"worker survived: {r['worker_survived']}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measurements", type=int, default=400_000)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--accounts", type=int, default=2_000)
    parser.add_argument("--only", default="kills,broker")
    args = parser.parse_args()
    only = set(args.only.split(","))
    results = {}
    if "kills" in only:
        with kafka() as broker:
            results["kills"] = run_kills(
                broker.bootstrap,
                measurements=args.measurements,
                kills=args.kills,
                accounts=args.accounts,
            )
        print(describe("worker SIGKILLs", results["kills"]))
    if "broker" in only:
        results["broker"] = run_broker_restart(
            measurements=args.measurements // 2, accounts=args.accounts
        )
        print(describe("broker restart", results["broker"]))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
