"""Latency from the ingest API's acknowledgement to usage the usage query API returns.

    .venv/bin/python -m bench.bench_latency [--rate 10000] [--seconds 20] [--probes-per-s 5]

One worker and one HTTP edge (`python -m connectors.cli worker|http`) on a fresh
deployment with the example catalog. For `--seconds` (after `--warmup` s):

- background load: requests of 1,000 `api` measurements (ts = now) over 10,000 accounts,
  paced to `--rate` measurements/s (a request every 1000/rate s; late requests go out at
  once, so the offered rate holds whenever the edge keeps up);
- probes: `--probes-per-s` times a second, one measurement on an account of its own;
  once the ingest API answered 200 (Kafka acknowledged it) the probe is pending, and
  one poller asks the usage query API every `--poll-ms` ms for the api_calls of every
  pending probe account (one query, however many are pending). A probe's latency runs
  from its 200 to the first answer that shows it (resolution: the poll interval plus
  one query's round trip); a probe not visible within 15 s counts as lost.

Everything is a public interface: the ingest API, the usage query API (edge → worker).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    API_KEY,
    Broker,
    Deployment,
    api_measurement,
    cpu_seconds,
    iso,
    kafka,
    now_ms,
)

BATCH = 1000
LOAD_ACCOUNTS = 10_000
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def body(measurements: list[bytes]) -> bytes:
    return b'{"measurements":[' + b",".join(measurements) + b"]}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Load:
    """Paced requests of BATCH measurements; counts and times what the edge acknowledged."""

    def __init__(self, client: httpx.AsyncClient, api: str, rate: float, run: str) -> None:
        self.client = client
        self.url = f"{api}/measurements"
        self.interval = BATCH / rate
        self.run = run
        self.sent = 0
        self.acks: list[float] = []
        self.failures: list[str] = []
        self.elapsed = 0.0

    def payload(self, n: int) -> bytes:
        ts = iso(now_ms())
        return body(
            [
                api_measurement(
                    f"{self.run}-{n}-{i}",
                    f"load-{(n * BATCH + i) % LOAD_ACCOUNTS:05d}",
                    ts,
                    f"user-{i % 17}",
                    1,
                    1000 + i,
                    20,
                )
                for i in range(BATCH)
            ]
        )

    async def post(self, n: int) -> None:
        content = self.payload(n)
        started = time.perf_counter()
        answer = await self.client.post(self.url, content=content, headers=HEADERS)
        self.acks.append(time.perf_counter() - started)
        if answer.status_code != 200:
            self.failures.append(f"{answer.status_code}: {answer.text[:200]}")
        self.sent += BATCH

    async def until(self, stop_at: float) -> None:
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        n = 0
        while time.monotonic() < stop_at:
            due = start + n * self.interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.post(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.gather(*tasks)
        self.elapsed = time.monotonic() - start


class Probes:
    """Single measurements on their own accounts, polled until query-visible.

    One poller asks for every pending probe account in one usage query, so the query
    load stays at one request per poll interval however many probes are pending.
    """

    def __init__(self, client: httpx.AsyncClient, api: str, run: str, poll_s: float) -> None:
        self.client = client
        self.api = api
        self.run = run
        self.poll_s = poll_s
        self.pending: dict[str, tuple[float, float]] = {}  # account → (sent at, acked at)
        self.latencies: list[tuple[float, float]] = []  # (sent at, latency s)
        self.missing = 0
        self.polls = 0
        self.sending = True

    async def probe(self, n: int) -> None:
        account = f"probe-{self.run}-{n}"
        sent_at = time.monotonic()
        measurement = api_measurement(f"p-{self.run}-{n}", account, iso(now_ms()), "u", 1, 1, 1)
        answer = await self.client.post(
            f"{self.api}/measurements", content=body([measurement]), headers=HEADERS
        )
        if answer.status_code != 200:
            self.missing += 1
            return
        self.pending[account] = (sent_at, time.perf_counter())

    async def poller(self, timeout: float = 15.0) -> None:
        while self.sending or self.pending:
            if not self.pending:
                await asyncio.sleep(self.poll_s)
                continue
            now = datetime.now(UTC)
            query = {
                "startDate": (now - timedelta(hours=2)).isoformat(),
                "endDate": (now + timedelta(hours=2)).isoformat(),
                "accountIds": list(self.pending),
                "aggregations": ["api_calls"],
            }
            self.polls += 1
            reply = await self.client.post(f"{self.api}/usage/query", json=query, headers=HEADERS)
            seen = time.perf_counter()
            if reply.status_code == 200:
                for row in reply.json().get("data", []):
                    entry = self.pending.get(row.get("accountId", ""))
                    if entry is not None and row.get("value") == "1":
                        del self.pending[row["accountId"]]
                        self.latencies.append((entry[0], seen - entry[1]))
            for account, (_, acked) in list(self.pending.items()):
                if seen - acked > timeout:
                    del self.pending[account]
                    self.missing += 1
            await asyncio.sleep(self.poll_s)

    async def until(self, stop_at: float, per_second: float) -> None:
        poller = asyncio.create_task(self.poller())
        tasks = []
        n = 0
        while time.monotonic() < stop_at:
            tasks.append(asyncio.create_task(self.probe(n)))
            n += 1
            await asyncio.sleep(1 / per_second)
        await asyncio.gather(*tasks)
        self.sending = False
        await poller


async def drive(
    deployment: Deployment,
    rate: float,
    seconds: float,
    warmup: float,
    probes_per_s: float,
    poll_ms: float,
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        load = Load(client, deployment.api, rate, deployment.app_id)
        probes = Probes(client, deployment.api, deployment.app_id, poll_ms / 1000)
        begin = time.monotonic()
        stop_at = begin + warmup + seconds
        await asyncio.gather(load.until(stop_at), probes.until(stop_at, probes_per_s))
    measured = [latency for sent_at, latency in probes.latencies if sent_at >= begin + warmup]
    return {
        "offered_per_s": rate,
        "acknowledged_per_s": load.sent / load.elapsed,
        "load_failures": len(load.failures),
        "load_failure_sample": load.failures[:2],
        "ingest_ack_p50_ms": percentile(load.acks, 0.5) * 1000,
        "ingest_ack_p99_ms": percentile(load.acks, 0.99) * 1000,
        "probes": len(measured),
        "probes_missing": probes.missing,
        "polls": probes.polls,
        "p50_s": percentile(measured, 0.5) if measured else None,
        "p99_s": percentile(measured, 0.99) if measured else None,
        "max_s": max(measured) if measured else None,
        "mean_s": statistics.mean(measured) if measured else None,
    }


def run(
    broker: Broker,
    *,
    rate: float = 10_000,
    seconds: float = 20,
    warmup: float = 3,
    probes_per_s: float = 5,
    poll_ms: float = 20,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        deployment = Deployment(broker.bootstrap, Path(tmp))
        worker, http = deployment.worker(), deployment.http()
        try:
            worker.start()
            http.start()
            deployment.wait_worker_ready(worker)
            deployment.wait_http_ready(http)
            cpu = {"worker": cpu_seconds(worker.pid), "http": cpu_seconds(http.pid)}
            started = time.monotonic()
            result = asyncio.run(drive(deployment, rate, seconds, warmup, probes_per_s, poll_ms))
            elapsed = time.monotonic() - started
            result["worker_cpu_share"] = (cpu_seconds(worker.pid) - cpu["worker"]) / elapsed
            result["http_cpu_share"] = (cpu_seconds(http.pid) - cpu["http"]) / elapsed
            result["worker_stats"] = (deployment.worker_health() or {}).get("stats", {})
        finally:
            http.stop()
            worker.stop()
            deployment.close()
    result.update(seconds=seconds, warmup=warmup, poll_ms=poll_ms, probes_per_s=probes_per_s)
    return result


def describe(r: dict[str, Any]) -> str:
    def s(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 1000:,.0f} ms"

    return "\n".join(
        [
            f"latency ack → query-visible at {r['offered_per_s']:,.0f} measurements/s offered "
            f"({r['acknowledged_per_s']:,.0f}/s acknowledged, {r['load_failures']} failed "
            f"requests), {r['seconds']:.0f} s after {r['warmup']:.0f} s warm-up",
            f"  probes {r['probes']} (+{r['probes_missing']} not visible within 15 s), "
            f"poll every {r['poll_ms']:.0f} ms: p50 {s(r['p50_s'])}, p99 {s(r['p99_s'])}, "
            f"max {s(r['max_s'])}",
            f"  ingest ack p50 {r['ingest_ack_p50_ms']:.0f} ms, p99 "
            f"{r['ingest_ack_p99_ms']:.0f} ms; CPU: worker {r['worker_cpu_share']:.0%}, "
            f"edge {r['http_cpu_share']:.0%} of a core",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10_000, help="measurements/s offered")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--probes-per-s", type=float, default=5)
    parser.add_argument("--poll-ms", type=float, default=20)
    args = parser.parse_args()
    with kafka() as broker:
        result = run(
            broker,
            rate=args.rate,
            seconds=args.seconds,
            warmup=args.warmup,
            probes_per_s=args.probes_per_s,
            poll_ms=args.poll_ms,
        )
    print(describe(result))


if __name__ == "__main__":
    main()
