"""Bills/s the Stripe sink syncs into the Stripe simulator, and proof that its rate limiter
holds.

    .venv/bin/python bench/bench_sink.py [--bills 600] [--limited-bills 80] [--rate 20]

Uses KAFKA_BOOTSTRAP_SERVERS, or starts a local broker (`LocalKafka`, free port,
temporary data dir). The simulator runs as its own process (`python -m
connectors.stripe_sim`) so that it does not share the sink's interpreter lock; the sink
runs in this process, one `StripeSink`, as `meterline stripe-sink` would.

1. Limiter off: `--bills` bills of 3 lines each, one Stripe customer per bill, are on
   `bills` before the sink starts; the clock runs from the sink's partition assignment
   to its last stored offset (every bill: invoice lookup, draft invoice, 3 items, ledger
   record acknowledged by Kafka). Target: >= 50 bills/s on one process.
2. Limiter on (`--rate` requests/s): `--limited-bills` more bills; the simulator counts
   requests as they arrive, and its most requests in any one-second window must not
   exceed the setting.
Both runs end by checking what Stripe holds: one item per bill line, items summing to
the bill total.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import stripe

from connectors.kafka.admin import create_topics
from connectors.kafka.broker import LocalKafka, free_port
from connectors.kafka.producer import new_producer
from connectors.stripe_sink.sink import StripeSink
from connectors.waiting import eventually
from streams.money import to_stripe_amount
from streams.schemas.bill import Bill
from streams.settings import load_settings
from streams.topics import Topics

PARTITIONS = 6
START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 2, 1, tzinfo=UTC)


@contextmanager
def broker() -> Iterator[str]:
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    cache = Path(os.environ.get("METERLINE_CACHE_DIR", Path.home() / ".cache" / "meterline"))
    with tempfile.TemporaryDirectory() as data:
        local = LocalKafka(port=free_port(), data_dir=Path(data), cache_dir=cache)
        local.start(timeout=120)
        try:
            yield local.bootstrap
        finally:
            local.stop()


@contextmanager
def simulator() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "connectors.stripe_sim", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/_sim/health").is_success
            except httpx.HTTPError:
                return False

        try:
            eventually(healthy, 20, 0.05, "the Stripe simulator to start")
        except TimeoutError:
            raise RuntimeError("the simulator did not start") from None
        yield url
    finally:
        process.terminate()
        process.wait(10)


def bill(number: int, customer: str) -> Bill:
    lines: list[dict[str, Any]] = [
        {
            "id": f"USAGE:{name}",
            "lineItemType": "USAGE",
            "description": f"{name} usage",
            "subtotal": f"{(number % 97) + index}.{index}5",
            "servicePeriodStartDate": START,
            "servicePeriodEndDate": END,
        }
        for index, name in enumerate(("api_calls", "storage", "seats"))
    ]
    total = sum((Decimal(line["subtotal"]) for line in lines), Decimal(0))
    return Bill.model_validate(
        {
            "id": f"bill_bench_{uuid.uuid4().hex[:16]}",
            "version": 1,
            "accountCode": customer,
            "accountPlanId": f"ap_{number}",
            "planCode": "bench",
            "currency": "USD",
            "status": "PENDING",
            "startDate": START,
            "endDate": END,
            "lines": lines,
            "total": total,
            "generatedAt": START,
            "statusChangedAt": START,
            "reason": "CREATED",
            "stripeCustomerId": customer,
        }
    )


def customers(url: str, n: int) -> list[str]:
    client = stripe.StripeClient("sk_test_bench", base_addresses={"api": url})
    with ThreadPoolExecutor(4) as pool:
        created = pool.map(
            lambda i: client.v1.customers.create(params={"email": f"c{i}@example.com"}).id,
            range(n),
        )
        return list(created)


def check(url: str, bills: list[Bill]) -> None:
    """One item per line, items adding up to the total, for every bill."""
    state = httpx.get(f"{url}/_sim/state", timeout=60).json()
    held: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in state["invoiceitems"]:
        held[item["metadata"].get("bill_id", "")].append(item)
    for b in bills:
        items = held[b.id]
        lines = sorted(i["metadata"]["line_id"] for i in items)
        assert lines == sorted(line.id for line in b.lines), (b.id, lines)
        assert sum(i["amount"] for i in items) == to_stripe_amount(b.total, b.currency), b.id


def run(bootstrap: str, url: str, n: int, rate: float | None) -> dict[str, float]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix, PARTITIONS)
    create_topics(bootstrap, topics.all())
    bills = [bill(i, c) for i, c in enumerate(customers(url, n))]
    producer = new_producer(bootstrap)
    for b in bills:
        producer.produce(topics.bills, key=b.accountCode.encode(), value=b.model_dump_json())
    producer.flush(30)
    httpx.delete(f"{url}/_sim/stats").raise_for_status()
    settings = load_settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        partitions=PARTITIONS,
        stripe_api_base=url,
        stripe_api_key="sk_test_bench",
        stripe_rate_limit=rate or 0,
        sink_port=free_port(),
        log_level="warning",
    )
    sink = StripeSink(settings, group_id=f"{prefix}sink")
    thread = threading.Thread(target=sink.run, name="sink")
    thread.start()
    try:
        while not sink.assigned:
            time.sleep(0.005)
        started = time.monotonic()
        deadline = started + 600
        while sink.outcomes.get("synced", 0) < n:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"sink stalled: {sink.status()}")
            time.sleep(0.005)
        elapsed = time.monotonic() - started
    finally:
        sink.stopping.set()
        thread.join(30)
    stats = httpx.get(f"{url}/_sim/stats").json()
    check(url, bills)
    return {
        "bills": n,
        "seconds": elapsed,
        "bills_per_s": n / elapsed,
        "requests": stats["total"],
        "requests_per_s": stats["total"] / elapsed,
        "max_requests_in_1s": stats["max_per_second"],
        "statuses": stats["by_status"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bills", type=int, default=600)
    parser.add_argument("--limited-bills", type=int, default=80)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()
    with ExitStack() as stack:
        bootstrap = stack.enter_context(broker())
        url = stack.enter_context(simulator())
        free = run(bootstrap, url, args.bills, None)
        print(
            f"limiter off: {free['bills']} bills (3 lines) in {free['seconds']:.2f}s = "
            f"{free['bills_per_s']:.1f} bills/s; {free['requests']} Stripe requests "
            f"({free['requests_per_s']:.0f}/s, {free['requests'] / free['bills']:.1f} per bill), "
            f"max {free['max_requests_in_1s']} in one second"
        )
        limited = run(bootstrap, url, args.limited_bills, args.rate)
        print(
            f"limiter {args.rate:g}/s: {limited['bills']} bills in {limited['seconds']:.2f}s = "
            f"{limited['bills_per_s']:.1f} bills/s; {limited['requests']} requests, "
            f"max {limited['max_requests_in_1s']} in any one second (simulator's count)"
        )
        if limited["max_requests_in_1s"] > args.rate:
            raise SystemExit(f"the limiter let {limited['max_requests_in_1s']} through in 1 s")


if __name__ == "__main__":
    main()
