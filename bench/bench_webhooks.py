"""Sustained verified Stripe webhooks per second through the HTTP edge into Kafka.

The edge (`meterline http`, uvicorn) runs as a subprocess on a free loopback port against
a real broker (KAFKA_BOOTSTRAP_SERVERS, or a local one started for the run). A bounded
number of distinct, signed `customer.subscription.updated` events (one customer per
event) is POSTed over a few concurrent keep-alive connections; every
answer must be 200, and every event must be on `stripe.events` afterwards. Signing
happens before the clock starts (Stripe's cost, not ours). Client and server share the
machine, so on 2 cores the figure is a lower bound for the edge alone.

    .venv/bin/python bench/bench_webhooks.py [--events 5000] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
from confluent_kafka import Consumer, TopicPartition

from connectors.environment import process_env
from connectors.kafka.admin import create_topics
from connectors.kafka.broker import LocalKafka, free_port
from connectors.waiting import eventually
from streams.topics import Topics

SECRET = "whsec_bench"
PARTITIONS = 6


@contextlib.contextmanager
def broker(workdir: Path) -> Iterator[str]:
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    cache = Path(os.environ.get("METERLINE_CACHE_DIR", Path.home() / ".cache" / "meterline"))
    kafka = LocalKafka(port=free_port(), data_dir=workdir / "kafka", cache_dir=cache)
    kafka.start(timeout=120)
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()


@contextlib.contextmanager
def edge(bootstrap: str, prefix: str, port: int, workdir: Path) -> Iterator[str]:
    env = process_env(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        partitions=PARTITIONS,
        http_port=port,
        log_level="warning",
        stripe_webhook_secrets=SECRET,
    )
    log = (workdir / "http.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "connectors.cli", "http"], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def started() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the edge did not start; see {workdir / 'http.log'}")
            return _healthy(f"{url}/healthz")

        try:
            eventually(started, 60, 0.2, "the HTTP edge to start")
        except TimeoutError:
            raise RuntimeError(f"the edge did not start; see {workdir / 'http.log'}") from None
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def subscription_updated(i: int, created: int) -> dict[str, Any]:
    """A 2025-03-31.basil `customer.subscription.updated` with Stripe's usual fields."""
    price = {
        "id": "price_pro", "object": "price", "active": True, "billing_scheme": "per_unit",
        "created": created - 86_400, "currency": "usd", "livemode": False,
        "lookup_key": "pro_monthly", "metadata": {}, "nickname": None, "product": "prod_pro",
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        "tax_behavior": "unspecified", "type": "recurring", "unit_amount": 9900,
        "unit_amount_decimal": "9900",
    }  # fmt: skip
    item = {
        "id": f"si_{i}", "object": "subscription_item", "created": created, "discounts": [],
        "metadata": {}, "price": price, "quantity": 1, "subscription": f"sub_{i}",
        "tax_rates": [], "current_period_start": created,
        "current_period_end": created + 30 * 86_400,
    }  # fmt: skip
    subscription = {
        "id": f"sub_{i}", "object": "subscription", "billing_cycle_anchor": created,
        "cancel_at": None, "cancel_at_period_end": False, "canceled_at": None,
        "collection_method": "charge_automatically", "created": created, "currency": "usd",
        "customer": f"cus_{i}", "ended_at": None, "latest_invoice": f"in_{i}",
        "livemode": False, "metadata": {}, "start_date": created, "status": "active",
        "trial_end": None, "trial_start": None,
        "items": {"object": "list", "data": [item], "has_more": False, "total_count": 1,
                  "url": f"/v1/subscription_items?subscription=sub_{i}"},
    }  # fmt: skip
    return {
        "id": f"evt_bench_{i}", "object": "event", "api_version": "2025-03-31.basil",
        "created": created, "data": {"object": subscription, "previous_attributes": {}},
        "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.subscription.updated",
    }  # fmt: skip


def signed_events(count: int) -> list[tuple[bytes, str]]:
    """Distinct subscription updates with their Stripe-Signature headers."""
    timestamp = int(time.time())
    out = []
    for i in range(count):
        body = orjson.dumps(subscription_updated(i, 1_740_000_000 + i))
        digest = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
        out.append((body, f"t={timestamp},v1={digest.hexdigest()}"))
    return out


async def post_all(
    url: str, events: list[tuple[bytes, str]], connections: int
) -> tuple[float, list[float], Counter[int]]:
    """POST every event over `connections` keep-alive connections (aiohttp: a client
    light enough not to be the bottleneck on a small machine)."""
    queue: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()
    for item in events:
        queue.put_nowait(item)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(url, connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                body, signature = queue.get_nowait()
                headers = {"Stripe-Signature": signature, "Content-Type": "application/json"}
                started = time.perf_counter()
                async with session.post("/webhooks/stripe", data=body, headers=headers) as answer:
                    await answer.read()
                latencies.append(time.perf_counter() - started)
                statuses[answer.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, statuses


def messages_on(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}"})
    try:
        total = 0
        for partition in range(PARTITIONS):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            total += high - low
        return total
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="signed webhooks to send")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections")
    parser.add_argument("--warmup", type=int, default=200, help="webhooks sent before timing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        workdir = Path(tmp)
        with broker(workdir) as bootstrap:
            topics = Topics(prefix=f"bench{uuid.uuid4().hex[:8]}.", partitions=PARTITIONS)
            create_topics(bootstrap, topics.all())
            events = signed_events(args.warmup + args.events)
            body_size = statistics.mean(len(body) for body, _ in events)
            with edge(bootstrap, topics.prefix, free_port(), workdir) as url:
                asyncio.run(post_all(url, events[: args.warmup], args.connections))
                elapsed, latencies, statuses = asyncio.run(
                    post_all(url, events[args.warmup :], args.connections)
                )
            published = messages_on(bootstrap, topics.stripe_events)

    latencies.sort()
    ms = [latency * 1000 for latency in latencies]
    print(
        f"{args.events} signed webhooks (~{body_size / 1024:.1f} KiB), "
        f"{args.connections} connections, {os.cpu_count()} cores"
    )
    print(f"  answers: {dict(statuses)}; on stripe.events: {published} (incl. warm-up)")
    print(f"  {args.events / elapsed:,.0f} verified webhooks/s ({elapsed:.2f} s)")
    print(
        f"  latency ms: p50 {ms[len(ms) // 2]:.1f}, p99 {ms[int(len(ms) * 0.99)]:.1f}, "
        f"max {ms[-1]:.1f}"
    )
    if statuses != Counter({200: args.events}) or published != args.warmup + args.events:
        raise SystemExit("not every webhook was acknowledged and published")


if __name__ == "__main__":
    main()
