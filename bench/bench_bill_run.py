"""Bill run: 10,000 accounts x 3 aggregations, one `POST /billjobs`, until 10,000 bills.

    .venv/bin/python -m bench.bench_bill_run [--accounts 10000] [--per-account 10] [--profile]

One worker and one HTTP edge on a fresh deployment with the example catalog. Set-up,
through the topics as Stripe and producers would:
- `stripe.events`: per account a `customer.created` and a `customer.subscription.created`
  (2025-03-31.basil, price lookup key `starter_monthly` → plan `starter`: api_calls
  tiered, active_users volume, data_transfer per GB; a standing charge and a minimum
  spend), the current period started two days ago;
- `measurements`: `--per-account` `api` measurements per account an hour ago, in
  envelopes of 100.
Once the worker's committed offsets reach the end of both topics, one
`POST /organizations/{org}/billjobs` with `{}` (every account: one tick per partition)
starts the clock; it stops when `--accounts` bills are on the `bills` topic.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import (
    API_KEY,
    RESULTS,
    Broker,
    Deployment,
    Profile,
    api_measurement,
    cpu_seconds,
    envelopes,
    iso,
    kafka,
    now_ms,
    produce_envelopes,
)
from connectors.kafka.producer import new_producer
from connectors.waiting import eventually
from tests.unit.stripe_payloads import BASIL, Item, customer, event, price, subscription

DAY = 86_400
PROFILE_MARKS = (
    "Billing.tick (streams/billing/state.py",  # the whole run of a partition
    "Billing.bills_of (streams/billing/state.py",  # previous bills (pydantic decode)
    "AccountState.plans (streams/accounts/state.py",  # account plans (pydantic decode)
    "AccountState.account (streams/accounts/state.py",
    "Billing.usage (streams/billing/state.py",  # usage of the period from the engine
    "build_bill (streams/billing/bills.py",  # pricing
    "encoded (streams/billing/runs.py",  # model_dump_json, once per bill
    "register.<locals>.publish (streams/agents/billing.py",  # produce + wait + store
    "Billing.store (streams/billing/state.py",
    "aiokafka/producer",
    "EpollSelector.select",
)
STAT = "bill_tick_"
# where the worker's time went (its stats, in ms): the steps of a tick, then the tables
WORKER_STEPS = {
    "pricing": f"{STAT}pricing_ms",
    "json": f"{STAT}json_ms",
    "reading": f"{STAT}reading_ms",
    "finalizing": f"{STAT}finalizing_ms",
    "storing": "bill_store_ms",
}
# what the worker's event-loop thread spent in ticks and stores: the stats
# `ThreadUsage.count` writes under these prefixes
THREAD_PREFIXES = ("bill_tick", "bill_store")
THREAD_STATS = {
    name: tuple(f"{prefix}_{suffix}" for prefix in THREAD_PREFIXES)
    for name, suffix in (
        ("user_s", "user_ms"),
        ("kernel_s", "system_ms"),
        ("page_faults", "page_faults"),
    )
}
PLAN_AGGREGATIONS = 3  # starter: api_calls, active_users, data_transfer


def stripe_events(accounts: list[str], period_start: int) -> Iterator[tuple[str, bytes]]:
    period = (period_start, period_start + 30 * DAY)
    for account in accounts:
        yield (
            account,
            orjson.dumps(
                event(
                    "customer.created",
                    customer(account),
                    created=period_start,
                    id=f"evt_c_{account}",
                )
            ),
        )
        sub = subscription(
            f"sub_{account}",
            api=BASIL,
            customer=account,
            items=[Item(f"si_{account}", price("price_starter", lookup_key="starter_monthly"))],
            created=period_start,
            period=period,
        )
        yield (
            account,
            orjson.dumps(
                event(
                    "customer.subscription.created",
                    sub,
                    created=period_start + 1,
                    id=f"evt_s_{account}",
                )
            ),
        )


def usage(accounts: list[str], per_account: int, run: str) -> Iterator[tuple[str, bytes]]:
    ts = iso(now_ms() - 3_600_000)
    for round_ in range(per_account):
        for a, account in enumerate(accounts):
            yield (
                account,
                api_measurement(
                    f"{run}-{a}-{round_}", account, ts, f"user-{round_ % 3}", 100, 2_000_000, 20
                ),
            )


def produce(bootstrap: str, topic: str, records: Iterator[tuple[str, bytes]]) -> None:
    producer = new_producer(bootstrap)
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError(f"not every message on {topic} was acknowledged")


def run(
    broker: Broker,
    *,
    accounts: int = 10_000,
    per_account: int = 10,
    setup_timeout: float = 300.0,
    timeout: float = 180.0,
    profile: bool = False,
) -> dict[str, Any]:
    """One bill run; `profile`: py-spy on the worker during the timed part (pyinstrument,
    over the worker's whole life, without py-spy)."""
    with tempfile.TemporaryDirectory(prefix="bench-bills-") as tmp:
        deployment = Deployment(broker.bootstrap, Path(tmp))
        sampler = Profile(RESULTS / "profile-bill-run.json") if profile else None
        try:
            result = _run(deployment, accounts, per_account, setup_timeout, timeout, sampler)
        except Exception as exc:
            kept = deployment.keep_logs(repr(exc))
            raise RuntimeError(f"{exc} (the processes' logs: {kept})") from exc
        finally:
            deployment.close()
    if sampler is not None:
        result["profile"] = sampler.summary(marks=PROFILE_MARKS)
        result["profile_file"] = str(sampler.path)
    return result


def _run(
    deployment: Deployment,
    accounts: int,
    per_account: int,
    setup_timeout: float,
    timeout: float,
    sampler: Profile | None,
) -> dict[str, Any]:
    topics = deployment.topics
    codes = [f"cus_bench{a:06d}" for a in range(accounts)]
    setup_started = time.monotonic()
    produce(
        deployment.bootstrap, topics.stripe_events, stripe_events(codes, int(time.time()) - 2 * DAY)
    )
    items = envelopes(usage(codes, per_account, deployment.app_id), topics.partitions, 100)
    produce_envelopes(deployment.bootstrap, topics.measurements, items)
    ends = {
        topic: deployment.end_offsets(topic)
        for topic in (topics.stripe_events, topics.measurements)
    }

    worker = deployment.worker(wrap=sampler.wrap() if sampler else None)
    http = deployment.http()
    try:
        worker.start()
        http.start()
        deployment.wait_worker_ready(worker)
        deployment.wait_http_ready(http)
        try:
            eventually(
                lambda: all(deployment.caught_up(topic, end) for topic, end in ends.items()),
                setup_timeout,
                0.5,
                "the worker to catch up",
            )
        except TimeoutError:
            deployment.record_state(worker, ends)
            raise
        setup_s = time.monotonic() - setup_started
        stats_before = (deployment.worker_health() or {}).get("stats", {})
        cpu = cpu_seconds(worker.pid)
        if sampler is not None:
            sampler.attach(worker.pid)

        started = time.monotonic()
        answer = httpx.post(
            f"{deployment.api}/billjobs",
            json={},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=30,
        )
        if answer.status_code != 202:
            raise RuntimeError(f"POST /billjobs answered {answer.status_code}: {answer.text}")
        on_topic = 0
        deadline = started + timeout
        while time.monotonic() < deadline:
            on_topic = sum(deployment.end_offsets(topics.bills))
            if on_topic >= accounts:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        worker_cpu = cpu_seconds(worker.pid) - cpu
        stats = stored(deployment, stats_before, accounts)
    finally:
        if sampler is not None:
            sampler.stop()
        http.stop()
        worker.stop()
        if sampler is not None:
            sampler.finish()

    result: dict[str, Any] = {
        "accounts": accounts,
        "aggregations_per_plan": PLAN_AGGREGATIONS,
        "measurements": accounts * per_account,
        "setup_s": setup_s,
        "bills": on_topic,
        "seconds": elapsed,
        "bills_per_s": on_topic / elapsed,
        "worker_cpu_share": worker_cpu / elapsed,
        "accounts_applied": stats.get("accounts_applied", 0),
        "accounts_unmapped": stats.get("accounts_unmapped", 0),
        "bill_versions": stats.get("bill_versions", 0) - stats_before.get("bill_versions", 0),
        # the worker's own account of its time (`TickTimes`), in seconds
        "accounts_priced": stats.get(f"{STAT}accounts", 0) - stats_before.get(f"{STAT}accounts", 0),
        "worker_steps_s": {
            step: (stats.get(key, 0) - stats_before.get(key, 0)) / 1000
            for step, key in WORKER_STEPS.items()
        },
        "worker_thread": {
            name: sum(stats.get(key, 0) - stats_before.get(key, 0) for key in keys)
            / (1 if name == "page_faults" else 1000)
            for name, keys in THREAD_STATS.items()
        },
    }
    if on_topic < accounts:
        result["warning"] = f"only {on_topic:,} of {accounts:,} bills within {timeout:.0f} s"
    return result


def stored(deployment: Deployment, before: dict[str, Any], bills: int) -> dict[str, Any]:
    """The worker's stats once it stored the run's bills (it counts them then, after
    they are on `bills`), or after 10 s; outside the timed part."""
    stats: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = (deployment.worker_health() or {}).get("stats", {})
        if stats.get("bill_versions", 0) - before.get("bill_versions", 0) >= bills:
            break
        time.sleep(0.05)
    return stats


def steps(r: dict[str, Any]) -> str:
    """Where the worker says a run's time went, per account and in all."""
    accounts = max(r["accounts_priced"], 1)
    split = ", ".join(
        f"{step} {seconds:.2f} s ({seconds / accounts * 1e6:.0f} µs/account)"
        for step, seconds in r["worker_steps_s"].items()
    )
    thread = r.get("worker_thread")
    if not thread:
        return split
    return (
        f"{split}; the event loop's thread in them: {thread['user_s']:.2f} s user, "
        f"{thread['kernel_s']:.2f} s kernel, {thread['page_faults']:,.0f} page faults "
        f"({thread['page_faults'] / accounts:.1f}/account)"
    )


def describe(r: dict[str, Any]) -> str:
    lines = [
        f"bill run: {r['accounts']:,} accounts x {r['aggregations_per_plan']} aggregations "
        f"({r['measurements']:,} measurements; set-up through the topics {r['setup_s']:.0f} s)",
        f"  {r['bills']:,} bills on `bills` {r['seconds']:.2f} s after POST /billjobs "
        f"({r['bills_per_s']:,.0f} bills/s; worker CPU {r['worker_cpu_share']:.0%} of a core)",
    ]
    if r.get("accounts_priced"):
        lines.append(f"  worker time: {steps(r)}")
    if "warning" in r:
        lines.append(f"  WARNING: {r['warning']}")
    if "profile" in r:
        lines.append("  profile: " + json.dumps(r["profile"], indent=1))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--per-account", type=int, default=10, help="measurements per account")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--profile", action="store_true", help="py-spy the worker")
    args = parser.parse_args()
    with kafka() as broker:
        result = run(
            broker,
            accounts=args.accounts,
            per_account=args.per_account,
            timeout=args.timeout,
            profile=args.profile,
        )
    print(describe(result))


if __name__ == "__main__":
    main()
