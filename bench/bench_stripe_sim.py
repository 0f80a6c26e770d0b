"""Requests/s the Stripe simulator serves for invoice item creation (bounded local loop).

Starts `python -m connectors.stripe_sim` as its own process on a loopback port, then
POSTs N invoice items (each with its own Idempotency-Key) from C concurrent httpx
connections, and N/10 sequentially through the official stripe SDK.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import stripe

N, CONCURRENCY = 5000, 8


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def burst(url: str, customer: str, n: int, concurrency: int) -> float:
    auth = {"Authorization": "Bearer sk_test_bench"}
    queue = iter(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in queue:
            r = await client.post(
                "/v1/invoiceitems",
                data={
                    "customer": customer,
                    "amount": str(i),
                    "currency": "usd",
                    "description": f"line {i}",
                    "metadata[bill_id]": "b1",
                },
                headers={"Idempotency-Key": f"bench-{i}"},
            )
            assert r.status_code == 200, r.text

    async with httpx.AsyncClient(base_url=url, headers=auth) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


def main() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "connectors.stripe_sim", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                httpx.get(f"{url}/_sim/health")
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        client = stripe.StripeClient("sk_test_bench", base_addresses={"api": url})
        customer = client.v1.customers.create(params={"email": "bench@example.com"}).id
        cpu = cpu_seconds(server.pid)
        rate = asyncio.run(burst(url, customer, N, CONCURRENCY))
        per_request = (cpu_seconds(server.pid) - cpu) / N
        print(f"httpx, {CONCURRENCY} concurrent: {N} invoice items at {rate:,.0f} req/s")
        print(
            f"server CPU per invoice item: {per_request * 1e6:,.0f} us"
            f" (= {1 / per_request:,.0f} req/s on one free core)"
        )
        rate1 = asyncio.run(burst(url, customer, N // 5, 1))
        print(f"httpx, sequential: {N // 5} invoice items at {rate1:,.0f} req/s")
        started, n = time.perf_counter(), N // 10
        for i in range(n):
            client.v1.invoice_items.create(
                params={"customer": customer, "amount": i, "currency": "usd"}
            )
        print(
            f"stripe SDK, sequential: {n} invoice items at "
            f"{n / (time.perf_counter() - started):,.0f} req/s"
        )
        stats = httpx.get(f"{url}/_sim/stats").json()
        print("server counted", stats["total"], "requests; busiest second", stats["max_per_second"])
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
