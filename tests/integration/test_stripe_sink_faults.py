"""The Stripe sink under faults: killed with SIGKILL at random points and restarted, and
against a Stripe that answers 429, 500 or times out after applying the write. In every
case Stripe ends with exactly one item per bill line, adding up to each bill's total."""

from __future__ import annotations

import random
import signal
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.environment import process_env
from connectors.kafka.broker import free_port
from streams.schemas.bill import Bill
from streams.topics import Topics
from tests.integration.test_stripe_sink import (
    SUBSCRIPTION_PLAN,
    Account,
    handled,
    mismatches,
    new_account,
    our_invoices,
    produce,
    running,
    sink_settings,
)
from tests.support import Process, eventually, try_get_json

pytestmark = pytest.mark.integration


def versions(account: Account, number: int, lines: int = 3) -> list[Bill]:
    """Three versions of one bill: created; recalculated (usage lines change, the last
    goes, a new one comes); approved."""
    usage = [f"USAGE:meter{i}" for i in range(lines - 1)]
    v1 = [("STANDING_CHARGE", "10.00")] + [(u, f"{number % 7 + i}.25") for i, u in enumerate(usage)]
    v2 = [("STANDING_CHARGE", "10.00")] + [(u, f"{number % 5 + i}.75") for i, u in enumerate(usage)]
    v2 = [*v2[:-1], ("USAGE:new", "4.00")]
    return [account.bill(1, v1), account.bill(2, v2), account.bill(3, v2, "APPROVED")]


def accounts(url: str, n: int) -> list[Account]:
    return [new_account(url, SUBSCRIPTION_PLAN if i % 2 else "standard") for i in range(n)]


def requests_seen(url: str) -> int:
    return int(httpx.get(f"{url}/_sim/stats").json()["total"])


def creating_items(url: str, after: int) -> bool:
    """Past `after` requests, and Stripe has just created an item: the sink is between
    the first and the last write of a bill version, before its ledger record."""
    if requests_seen(url) < after:
        return False
    journal = httpx.get(f"{url}/_sim/requests").json()
    last = journal[-1] if journal else {}
    return bool(last.get("path") == "/v1/invoiceitems" and last.get("method") == "POST")


def creating_items_or_stopped(url: str, after: int, sink: Process) -> bool:
    return creating_items(url, after) or not sink.alive()


def finalized_everywhere(url: str, bills: Sequence[Bill]) -> bool:
    invoice_mode = {b.id for b in bills if b.planCode != SUBSCRIPTION_PLAN}
    invoices = our_invoices(url)
    return len(invoices) == len(invoice_mode) and all(i["status"] == "open" for i in invoices)


def test_a_sink_killed_at_random_points_and_restarted_ends_with_one_item_per_line(
    kafka_bootstrap: str, topics: Topics, url: str, tmp_path: Path
) -> None:
    people = accounts(url, 16)
    # Twelve lines a bill: the sink writes them four at a time, so a kill right after
    # an item was created lands before the version's ledger record.
    bills = [bill for i, a in enumerate(people) for bill in versions(a, i, lines=12)]
    final = [b for b in bills if b.version == 3]
    settings = sink_settings(kafka_bootstrap, topics, url, stripe_finalize_on_approval=True)
    sink_port = free_port()
    env = process_env(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topics.prefix,
        partitions=topics.partitions,
        app_id=settings.app_id,
        sink_port=sink_port,
        stripe_api_base=url,
        stripe_api_key="sk_test_tests",
        stripe_mode_overrides=f"plan:{SUBSCRIPTION_PLAN}=subscription",
        stripe_finalize_on_approval=True,
        stripe_rate_limit=0,
        stripe_retry_base_s=0.05,
        # Static membership: a restarted sink takes its partitions back without waiting
        # for the killed one's session to time out.
        stripe_sink_instance_id="sink-under-test",
    )
    health = f"http://127.0.0.1:{sink_port}/healthz"
    # Slow Stripe down a little so that kills land in the middle of bill versions.
    httpx.post(f"{url}/_sim/faults", json={"latency_ms": 15}).raise_for_status()
    produce(kafka_bootstrap, topics, bills)
    chance = random.Random(20260101)
    sink = Process(["stripe-sink"], env, tmp_path / "sink.log")
    kills = 0
    try:
        for kills in range(1, 4):
            sink.start()
            eventually(lambda: (try_get_json(health) or {}).get("assigned"), timeout=60)
            # Kill after a random number of further requests, as an item is created.
            after = requests_seen(url) + chance.randint(10, 80)
            eventually(partial(creating_items_or_stopped, url, after, sink), 60, 0)
            assert sink.alive(), sink.log_tail()
            sink.stop(signal.SIGKILL)
            if kills > 1:
                # The restart comes more than 24 h later: Stripe has forgotten the
                # idempotency keys, only the ledger and adopting existing items remain.
                later = {"seconds": 25 * 3600}
                httpx.post(f"{url}/_sim/advance", json=later).raise_for_status()
        sink.start()
        eventually(lambda: not mismatches(url, final) and finalized_everywhere(url, final), 60)
        sink.stop(signal.SIGTERM)
    finally:
        sink.stop(signal.SIGKILL)
    assert kills == 3
    assert mismatches(url, final) == []
    assert "Traceback" not in sink.log_path.read_text(), sink.log_tail()


def test_429s_500s_and_timeouts_after_apply_end_with_one_item_per_line(
    kafka_bootstrap: str, topics: Topics, url: str
) -> None:
    people = accounts(url, 16)
    bills = [bill for i, a in enumerate(people) for bill in versions(a, i)]
    final = [b for b in bills if b.version == 3]
    faults: dict[str, Any] = {
        "rate_429": 0.07,
        "rate_500": 0.07,
        "rate_timeout_after_apply": 0.07,
        "timeout_mode": "sleep",
        "timeout_hold_ms": 1_000,
        "seed": 7,
    }
    httpx.post(f"{url}/_sim/faults", json=faults).raise_for_status()
    settings = sink_settings(
        kafka_bootstrap,
        topics,
        url,
        stripe_finalize_on_approval=True,
        stripe_request_timeout_s=0.3,
    )
    produce(kafka_bootstrap, topics, bills)
    with running(settings) as sink:
        eventually(lambda: handled(sink) >= len(bills), timeout=90)
        outcomes = dict(sink.outcomes)
    stats = httpx.get(f"{url}/_sim/stats").json()
    assert stats["by_status"].get("429", 0) > 0 and stats["by_status"].get("500", 0) > 0
    assert outcomes["retry"] > 0 and "dead_letter" not in outcomes
    assert mismatches(url, final) == []
    assert finalized_everywhere(url, final)
