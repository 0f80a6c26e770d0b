"""Measurements/s through the ingest API: uvicorn, the real app, a real Kafka broker.

    .venv/bin/python bench/bench_ingest_api.py [--requests 400] [--connections 4] [--profile]

Uses KAFKA_BOOTSTRAP_SERVERS, or starts a local broker (`LocalKafka`, free port, temporary
data dir). Creates the topics under a unique prefix, serves `create_app` with uvicorn on
a free loopback port in a child process, and posts `--requests` requests of `--batch`
measurements (distinct uids, 1,000 accounts) over `--connections` concurrent keep-alive
connections from an httpx client. The client lives in this process so it does not share
the server's interpreter lock: the figure is what one edge process sustains, from the
first byte sent to the last acknowledged answer (every answer is 200 only after Kafka
acked). On a small shared machine the broker and the client compete with the server
for cores, so the server's own CPU time is reported too: measurements per CPU-second
of the edge process is what it would sustain on a core of its own. With `--profile` the
server runs under pyinstrument and prints where its time went when it stops.
Target: >= 100,000 measurements/s per process.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson

from connectors.kafka.admin import create_topics
from connectors.kafka.broker import LocalKafka, free_port
from streams.settings import Settings
from streams.topics import MEASUREMENTS, Topics

ORG = "bench"
KEY = "bench-key"
PARTITIONS = 6


def serve(settings: dict[str, Any], port: int, profile: bool) -> None:
    """The child process: one HTTP edge, stopped by SIGTERM (uvicorn shuts down cleanly)."""
    import uvicorn

    from connectors.http.app import create_app

    # uvicorn re-raises the SIGTERM it handled once it has shut down; let the process
    # go on to print the profile instead of dying of it.
    signal.signal(signal.SIGTERM, lambda *_: None)

    app = create_app(Settings(**settings))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    if not profile:
        server.run()
        return
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="enabled")
    with profiler:
        server.run()
    print(profiler.output_text(unicode=True, color=False, show_all=False), flush=True)


def bodies(requests: int, batch: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    out = []
    for r in range(requests):
        measurements = [
            {
                "uid": f"{run}-{r}-{i}",
                "meter": "api",
                "account": f"acct-{rng.randrange(1000):04d}",
                "ts": "2026-01-01T10:00:00Z",
                "who": {"user": f"user-{rng.randrange(50)}"},
                "what": {"endpoint": "/v1/search"},
                "measure": {"calls": 1, "bytes": rng.randrange(1, 100_000)},
            }
            for i in range(batch)
        ]
        out.append(orjson.dumps({"measurements": measurements}))
    return out


async def wait_until_serving(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            try:
                await client.get("/metrics")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)  # polling a starting server, with a deadline
    raise RuntimeError(f"the HTTP edge did not start within {timeout}s")


async def post_all(base: str, payloads: list[bytes], connections: int) -> tuple[float, list[float]]:
    """Post every payload over `connections` connections; (elapsed s, latencies s)."""
    path = f"/organizations/{ORG}/measurements"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    queue = list(reversed(payloads))
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def worker() -> None:
            while queue:
                payload = queue.pop()
                started = time.perf_counter()
                response = await client.post(path, content=payload, headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - started, latencies


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--batch", type=int, default=1000, help="measurements per request")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="profile the server")
    args = parser.parse_args()
    run(
        requests=args.requests,
        batch=args.batch,
        connections=args.connections,
        warmup=args.warmup,
        profile=args.profile,
    )


def run(
    bootstrap: str | None = None,
    *,
    requests: int = 400,
    batch: int = 1000,
    connections: int = 4,
    warmup: int = 20,
    profile: bool = False,
    broker_pid: int | None = None,
) -> dict[str, Any]:
    """One measured run (printed as before); the figures as a dict for `bench.run`.

    `bootstrap`: an existing broker (`broker_pid` to count its CPU); default
    KAFKA_BOOTSTRAP_SERVERS, or a local broker started for the run.
    """
    with ExitStack() as stack:
        bootstrap = bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
            cache = Path(os.environ.get("METERLINE_CACHE_DIR", Path.home() / ".cache/meterline"))
            broker = LocalKafka(port=free_port(), data_dir=data_dir, cache_dir=cache)
            broker.start(timeout=120)
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap
            broker_pid = broker.pid()
        settings: dict[str, Any] = {
            "org_id": ORG,
            "api_keys": KEY,
            "kafka_bootstrap_servers": bootstrap,
            "topic_prefix": f"bench{uuid.uuid4().hex[:8]}.",
            "partitions": PARTITIONS,
            "log_level": "warning",
        }
        topics = Topics(settings["topic_prefix"], PARTITIONS)
        create_topics(bootstrap, [topics.resolve(MEASUREMENTS)])

        port = free_port()
        child = multiprocessing.get_context("spawn").Process(
            target=serve, args=(settings, port, profile)
        )
        child.start()
        stack.callback(child.join, 30)
        stack.callback(child.terminate)  # SIGTERM: uvicorn drains and the producer flushes
        base = f"http://127.0.0.1:{port}"

        payloads = bodies(warmup + requests, batch)
        asyncio.run(wait_until_serving(base))
        asyncio.run(post_all(base, payloads[:warmup], connections))
        assert child.pid is not None
        watched = {"server": child.pid, "client": os.getpid()}
        if broker_pid is not None:
            watched["broker"] = broker_pid
        before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        elapsed, latencies = asyncio.run(post_all(base, payloads[warmup:], connections))
        used = {name: cpu_seconds(pid) - before[name] for name, pid in watched.items()}
        cpu = used["server"]

        total = requests * batch
        size = statistics.mean(len(p) for p in payloads) / 1000
        latencies.sort()
        print(
            f"ingest API: {requests} requests x {batch} measurements "
            f"(~{size:.0f} kB each), {connections} connections, {PARTITIONS} partitions"
        )
        print(
            f"  {total:,} measurements in {elapsed:.2f} s = {total / elapsed:,.0f} measurements/s"
        )
        print(
            f"  server process CPU {cpu:.2f} s ({cpu / elapsed:.0%} of a core) = "
            f"{total / cpu:,.0f} measurements per CPU-second"
        )
        split = ", ".join(f"{name} {seconds / elapsed:.0%}" for name, seconds in used.items())
        print(f"  CPU share of the {os.cpu_count()} cores' wall time: {split}")
        p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
        print(f"  latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
        sys.stdout.flush()
        return {
            "requests": requests,
            "batch": batch,
            "connections": connections,
            "measurements_per_s": total / elapsed,
            "measurements_per_server_cpu_s": total / cpu if cpu else None,
            "cpu_share": {name: seconds / elapsed for name, seconds in used.items()},
            "p50_ms": p50 * 1000,
            "p99_ms": p99 * 1000,
        }


if __name__ == "__main__":
    main()
