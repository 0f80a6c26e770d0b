"""The billing agent without a broker (faust's `agent.test_context()`): a run command
publishes the account's bill to `bills`; a command it cannot carry out is dead-lettered
to `bill.commands.rejected` with the reason."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import orjson
import pytest

from streams.billing.state import ThreadUsage, cycle_collection_paused
from streams.clock import DAY_MS, HOUR_MS
from streams.schemas.bill import Bill, BillStatus
from tests.fixtures.worker import (
    T0_MS,
    USAGE_BATCH_MESSAGES,
    OfflineWorker,
    acked,
    held_by_the_changelog,
    home,
    measurement,
    message,
    settled,
    subscription_created,
)

CUSTOMER = "cus_1"
STARTED_MS = T0_MS  # the subscription's start


async def subscribe_to_pro(offline: OfflineWorker) -> None:
    """CUSTOMER subscribes to the pro plan, through the accounts agent."""
    created = subscription_created(CUSTOMER)
    async with offline.agent("accounts").test_context() as agent:
        await acked(await agent.put(orjson.dumps(created), key=CUSTOMER.encode()))


async def use(offline: OfflineWorker, *calls: int) -> None:
    """CUSTOMER makes API calls an hour into the subscription, through the usage agent."""
    assert len(calls) == USAGE_BATCH_MESSAGES
    ts_ms = STARTED_MS + HOUR_MS
    async with offline.agent("usage").test_context() as agent:
        events = [
            await agent.put(
                message(measurement(f"u-{n}", count, account=CUSTOMER, ts_ms=ts_ms)),
                key=CUSTOMER.encode(),
                partition=home(CUSTOMER),
            )
            for n, count in enumerate(calls)
        ]
        await acked(*events)


async def command(offline: OfflineWorker, document: Any) -> None:
    value = document if isinstance(document, bytes) else orjson.dumps(document)
    async with offline.agent("billing").test_context() as agent:
        await acked(await agent.put(value, key=CUSTOMER.encode()))


async def test_a_run_publishes_the_bill_of_the_accounts_plan_and_usage_with_its_total(
    offline: OfflineWorker,
) -> None:
    offline.now_ms = STARTED_MS + 2 * DAY_MS
    await subscribe_to_pro(offline)
    await use(offline, 400, 350, 250)

    await command(offline, {"type": "run", "account": CUSTOMER})

    [published] = offline.kafka.on(offline.topics.bills)
    assert published.key == CUSTOMER.encode()
    bill = published.json()
    assert (bill["accountCode"], bill["planCode"], bill["version"]) == (CUSTOMER, "pro", 1)
    # pro: a 99.00 standing charge, 1,000 calls at 0.0015 plus a 5.00 platform fee,
    # no storage; no data transfer, so no API units (a compound aggregation of both)
    lines = {line["id"]: line for line in bill["lines"]}
    assert Decimal(lines["USAGE:api_calls"]["quantity"]) == 1000
    assert {id: Decimal(line["subtotal"]) for id, line in lines.items()} == {
        "STANDING_CHARGE": Decimal("99.00"),
        "USAGE:api_calls": Decimal("6.50"),
        "USAGE:peak_storage": Decimal("0.00"),
        "USAGE:api_units": Decimal("0.00"),
    }
    assert (Decimal(bill["total"]), bill["currency"]) == (Decimal("105.50"), "USD")
    assert not offline.kafka.on(offline.topics.bill_commands_rejected)
    assert not offline.kafka.unacknowledged()


@asynccontextmanager
async def billing_with_kafka_held(offline: OfflineWorker) -> AsyncIterator[Any]:
    """The billing agent two days into CUSTOMER's pro subscription, Kafka holding every
    write (until `offline.kafka.release()`)."""
    offline.now_ms = STARTED_MS + 2 * DAY_MS
    await subscribe_to_pro(offline)
    offline.kafka.hold()
    async with offline.agent("billing").test_context() as agent:
        yield agent


async def test_a_run_is_not_acknowledged_before_kafka_holds_the_bills_it_published(
    offline: OfflineWorker,
) -> None:
    async with billing_with_kafka_held(offline) as agent:
        run = {"type": "run", "account": CUSTOMER}
        event = await agent.put(orjson.dumps(run), key=CUSTOMER.encode())
        assert await held_by_the_changelog(offline.kafka, event)
        assert offline.kafka.on(offline.topics.bills)  # published first, then stored
        offline.kafka.release()
        await acked(event)


async def subscribe(offline: OfflineWorker, customers: list[str]) -> None:
    async with offline.agent("accounts").test_context() as agent:
        events = [
            await agent.put(orjson.dumps(subscription_created(c, id=f"sub_{c}")), key=c.encode())
            for c in customers
        ]
        await acked(*events)


async def test_the_next_partitions_tick_runs_while_kafka_takes_the_bills_of_the_one_before(
    offline: OfflineWorker,
) -> None:
    offline.now_ms = STARTED_MS + 2 * DAY_MS
    first = [c for c in (f"cus_{n}" for n in range(80)) if home(c) == 0][:3]
    second = [c for c in (f"cus_{n}" for n in range(80)) if home(c) == 1][:3]
    await subscribe(offline, first + second)
    offline.kafka.hold()
    async with offline.agent("billing").test_context() as agent:
        try:  # the second tick publishes its bills while Kafka holds the first tick's
            ticks = [
                await asyncio.wait_for(
                    agent.put(
                        orjson.dumps({"type": "tick", "partition": p, "at": offline.now_ms}),
                        key=b"tick",
                        partition=p,
                    ),
                    5,
                )
                for p in (0, 1)
            ]
            await settled(lambda: len(offline.kafka.on(offline.topics.bills)) == 6)
            published = {record.key for record in offline.kafka.on(offline.topics.bills)}
            assert published == {c.encode() for c in first + second}
            assert not any(tick.message.acked for tick in ticks)  # nothing stored yet
        finally:
            offline.kafka.release()
        await acked(*ticks)
    assert not offline.kafka.unacknowledged()


async def test_a_command_waits_for_the_bills_in_flight_of_its_accounts_partition(
    offline: OfflineWorker,
) -> None:
    async with billing_with_kafka_held(offline) as agent:
        run = await agent.put(orjson.dumps({"type": "run", "account": CUSTOMER}), key=b"c")
        await settled(lambda: offline.kafka.on(offline.topics.bills))
        [bill] = [record.json() for record in offline.kafka.on(offline.topics.bills)]
        approve = {"type": "status", "account": CUSTOMER, "billId": bill["id"]}
        try:  # the bill is not stored yet: the approval waits for it, not finding no bill
            approval = await asyncio.wait_for(
                agent.put(orjson.dumps(approve | {"status": "APPROVED"}), key=b"c"), 5
            )
            await asyncio.sleep(0.05)
            assert len(offline.kafka.on(offline.topics.bills)) == 1
            assert not offline.kafka.on(offline.topics.bill_commands_rejected)
        finally:
            offline.kafka.release()
        await acked(run, approval)
    versions = [record.json() for record in offline.kafka.on(offline.topics.bills)]
    assert [(v["id"], v["version"], v["status"]) for v in versions] == [
        (bill["id"], 1, "PENDING"),
        (bill["id"], 2, "APPROVED"),
    ]
    assert not offline.kafka.on(offline.topics.bill_commands_rejected)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"{not json", "command: Invalid JSON"),
        ({"type": "run"}, "run.account: Field required"),
        (
            {"type": "status", "account": CUSTOMER, "billId": "bill_nope", "status": "APPROVED"},
            f"no bill bill_nope for {CUSTOMER}",
        ),
    ],
    ids=["not-json", "missing-account", "approve-unknown-bill"],
)
async def test_a_command_it_cannot_carry_out_is_dead_lettered_with_the_reason(
    offline: OfflineWorker, document: Any, reason: str
) -> None:
    await command(offline, document)

    assert not offline.kafka.on(offline.topics.bills)
    [dead] = offline.kafka.on(offline.topics.bill_commands_rejected)
    assert dead.key == CUSTOMER.encode()
    letter = dead.json()
    assert reason in letter["reason"]
    assert letter["source"] == f"{offline.topics.bill_commands}[0]@0"
    carried = document.decode() if isinstance(document, bytes) else document
    assert letter["command"] == carried


async def test_a_tick_of_many_accounts_logs_one_line_for_its_bills_and_each_bill_at_debug(
    offline: OfflineWorker, caplog: pytest.LogCaptureFixture
) -> None:
    offline.now_ms = STARTED_MS + 2 * DAY_MS
    customers = [c for c in (f"cus_{n}" for n in range(60)) if home(c) == 0][:12]
    await subscribe(offline, customers)
    caplog.set_level(logging.INFO, logger="streams.agents.billing")

    async with offline.agent("billing").test_context() as agent:
        tick = {"type": "tick", "partition": 0, "at": offline.now_ms}
        await acked(await agent.put(orjson.dumps(tick), key=b"tick", partition=0))

    published = offline.kafka.on(offline.topics.bills)
    assert sorted(record.key or b"" for record in published) == sorted(
        c.encode() for c in customers
    )
    [line] = [r.getMessage() for r in caplog.records if r.name == "streams.agents.billing"]
    assert line.startswith(f"{len(customers)} bill versions published and stored (")
    assert f"{offline.topics.bill_commands}[0]@0" in line
    # where the tick's time went, in the line and in the worker's stats (/healthz)
    assert f"): {len(customers)} accounts priced in " in line
    assert ", their JSON " in line and ", tables written in " in line
    assert "(the loop's thread: " in line and " page faults)" in line
    stats = offline.context.stats
    assert stats["bill_tick_accounts"] == len(customers)
    assert stats["bill_versions"] == len(customers)
    timed = ("reading", "pricing", "json", "finalizing", "user", "system")
    assert all(f"bill_tick_{step}_ms" in stats for step in timed)
    assert all(f"bill_store_{what}" in stats for what in ("ms", "user_ms", "system_ms"))
    assert "bill_tick_page_faults" in stats and "bill_store_page_faults" in stats


def test_a_steps_thread_usage_counts_the_pages_it_touched_for_the_first_time() -> None:
    pages = 4096  # 16 MiB of memory this process never touched before
    before = ThreadUsage.now()
    fresh = bytearray(pages * 4096)
    fresh[::4096] = b"\x01" * pages
    used = ThreadUsage.now().since(before)
    assert used.faults >= pages * 9 // 10
    assert used.user >= 0 and used.system >= 0


def test_the_cycle_collector_is_on_again_after_a_bill_run_even_when_the_run_failed() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), cycle_collection_paused():
        assert not gc.isenabled()
        raise RuntimeError("a run that failed")
    assert gc.isenabled()


async def test_a_tick_decodes_the_stored_bills_it_may_change_not_the_accounts_history(
    offline: OfflineWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bill run of an account in its second year costs what it did in its first month:
    it reads the stored bill of the period it recalculates and those it may approve or
    lock, not every bill the account ever had."""
    settings = offline.context.settings
    offline.context.settings = settings.model_copy(
        update={"bill_auto_approve": True, "bill_auto_lock": True}
    )
    await subscribe_to_pro(offline)
    partition = home(CUSTOMER)

    async def tick(month: int) -> list[dict[str, Any]]:
        before = len(offline.kafka.on(offline.topics.bills))
        offline.now_ms = STARTED_MS + month * 30 * DAY_MS + 15 * DAY_MS
        document = {"type": "tick", "partition": partition, "at": offline.now_ms}
        async with offline.agent("billing").test_context() as agent:
            await acked(await agent.put(orjson.dumps(document), key=b"tick", partition=partition))
        return [record.json() for record in offline.kafka.on(offline.topics.bills)[before:]]

    for month in range(12):  # a bill a month, each locked in the next month's run
        await tick(month)
    stored = offline.context.bills(CUSTOMER) if offline.context.bills else {}
    statuses = sorted(bill.status for bill in stored.values())
    assert statuses == [BillStatus.LOCKED] * 11 + [BillStatus.PENDING]

    decoded: list[str] = []
    decode = Bill.model_validate_json

    def counted(data: Any, *args: Any, **kwargs: Any) -> Bill:
        bill = decode(data, *args, **kwargs)
        decoded.append(bill.id)
        return bill

    monkeypatch.setattr(Bill, "model_validate_json", counted)
    published = await tick(12)

    last_month = max(stored.values(), key=lambda bill: bill.startDate)
    assert decoded == [last_month.id]  # not the eleven locked bills before it
    assert [(b["id"], b["version"], b["status"]) for b in published] == [
        (published[0]["id"], 1, "PENDING"),  # the new month's bill
        (last_month.id, last_month.version + 1, "APPROVED"),
        (last_month.id, last_month.version + 2, "LOCKED"),
    ]
    assert published[0]["id"] not in stored
