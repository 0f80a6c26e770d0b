"""Billing agent: `bill.commands` → versioned bills on `bills`.

Runs come from the API (run), from a timer (one tick per partition, published by the
leader) and status changes (approve, lock). For every command:
  1. compute the new bill versions from the tables (pure, `streams.bill_runs`)
  2. publish them to `bills` and wait for Kafka's acknowledgement
  3. write them to the tables (bills, per-account index)
so a crash between 2 and 3 re-publishes the same version (downstream de-duplicates by
id + version) instead of losing one. faust commits the command's offset after this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from faust.web import Request, Response, View
from pydantic import ValidationError

from streams import pages
from streams.agents.routing import on_owner
from streams.bill_runs import (
    LockedRange,
    finalize,
    from_ms,
    locked_ranges,
    locked_reason,
    run_account_plan,
    updated_index,
)
from streams.billing import LifecycleError, transition
from streams.delivery import deliver
from streams.partitioning import partition_for
from streams.readiness import when_ready
from streams.schemas.bill import Bill
from streams.schemas.commands import COMMANDS, ChangeStatus, RunBills, Tick
from streams.tables import AccountTable, account_key, account_table, table_key
from streams.topics import BILL_COMMANDS, BILLS, faust_topic
from streams.usage_store import period_values

if TYPE_CHECKING:
    from streams.app import MeterlineApp, WorkerContext

log = logging.getLogger(__name__)


class Billing:
    """Bill state of the accounts this worker owns, and what each command does to it."""

    def __init__(self, context: WorkerContext, bills: AccountTable, index: AccountTable) -> None:
        self.context = context
        self.bills = bills
        self.index = index
        self._locks: dict[str, tuple[bytes, list[LockedRange]]] = {}

    # reads ------------------------------------------------------------------------

    def bills_of(self, account: str) -> dict[str, Bill]:
        stored = self.index.get(account_key(account))
        out: dict[str, Bill] = {}
        for entry in orjson.loads(stored) if stored else []:
            raw = self.bills.get(table_key(account, entry["id"]).encode())
            if raw is not None:
                out[entry["id"]] = Bill.model_validate_json(raw)
        return out

    def locked(self, account: str, ts_ms: int) -> str | None:
        """Why a measurement of `account` at `ts_ms` may not be folded (its bill is locked)."""
        stored = self.index.get(account_key(account))
        if stored is None:
            return None
        cached = self._locks.get(account)
        if cached is None or cached[0] is not stored:
            cached = self._locks[account] = (stored, locked_ranges(stored))
        return locked_reason(cached[1], ts_ms)

    def usage(
        self, account: str, functions: Mapping[str, Any], start: int, end: int
    ) -> Mapping[str, Decimal | None]:
        table = self.context.tables["usage"]

        def read(key: str) -> bytes | None:
            stored: bytes | None = table.get(key.encode())
            return stored

        return period_values(read, account, functions, start, end)

    # commands ---------------------------------------------------------------------

    def run(self, account: str, now: datetime) -> list[Bill]:
        accounts = self.context.accounts
        catalog = self.context.catalog
        if accounts is None or catalog is None:
            return []
        live = catalog.current()
        previous = self.bills_of(account)
        owner = accounts.account(account)
        out: list[Bill] = []
        for account_plan in accounts.plans(account):
            result = run_account_plan(
                account_plan=account_plan,
                account=owner,
                catalog=live,
                previous=previous,
                usage=self.usage,
                now=now,
            )
            out.extend(result.bills)
            for reason in result.skipped:
                log.debug("bill run %s: %s", account, reason)
        return out

    def tick(self, partition: int, now: datetime) -> list[Bill]:
        settings = self.context.settings
        accounts = self.context.accounts
        if accounts is None:
            return []
        out: list[Bill] = []
        grace = timedelta(seconds=settings.bill_grace_period_s)
        for account in accounts.account_codes():
            if partition_for(account, settings.partitions) != partition:
                continue
            fresh = {bill.id: bill for bill in self.run(account, now)}
            out.extend(fresh.values())
            current = {**self.bills_of(account), **fresh}
            for bill in current.values():
                out.extend(
                    finalize(bill, now, grace, settings.bill_auto_approve, settings.bill_auto_lock)
                )
        return out

    def change_status(self, command: ChangeStatus, now: datetime) -> list[Bill]:
        bill = self.bills_of(command.account).get(command.billId)
        if bill is None:
            raise LifecycleError(command.billId, f"no bill {command.billId} for {command.account}")
        changed = transition(bill, command.status, now, expected_version=command.expectedVersion)
        return [] if changed is bill else [changed]

    def store(self, bills: list[Bill]) -> None:
        by_account: dict[str, list[Bill]] = {}
        for bill in bills:
            key = table_key(bill.accountCode, bill.id).encode()
            self.bills[key] = bill.model_dump_json().encode()
            by_account.setdefault(bill.accountCode, []).append(bill)
        for account, changed in by_account.items():
            key = account_key(account)
            self.index[key] = updated_index(self.index.get(key), changed)


def now_utc() -> datetime:
    return from_ms(time.time_ns() // 1_000_000)


def register(app: MeterlineApp, context: WorkerContext) -> None:
    settings = context.settings
    partitions = settings.partitions
    billing = Billing(
        context,
        account_table(app, "bills", partitions, "Bill by <account>|<bill id> (latest version)"),
        account_table(app, "billindex", partitions, "Bill summaries of an account"),
    )
    context.tables["bills"] = billing.bills
    context.lock_check = billing.locked
    context.billing = billing
    commands = faust_topic(app, context.topics, BILL_COMMANDS)
    bills_topic = faust_topic(app, context.topics, BILLS)

    async def publish(bills: list[Bill], source: str) -> None:
        # 1. publish and wait for Kafka  2. then the tables, and wait for Kafka again
        # (see the module docstring)
        await deliver(
            bills_topic,
            [(bill.accountCode.encode(), bill.model_dump_json().encode(), None) for bill in bills],
        )
        billing.store(bills)
        await billing.bills.confirm()
        await billing.index.confirm()
        for bill in bills:
            log.info(
                "bill %s v%d %s account=%s total=%s %s (%s)",
                bill.id,
                bill.version,
                bill.status,
                bill.accountCode,
                bill.total,
                bill.currency,
                source,
            )
        context.stats["bill_versions"] += len(bills)

    @app.agent(commands, name="billing", concurrency=1)
    async def handle(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            source = f"{message.topic}[{message.partition}]@{message.offset}"
            try:
                command = COMMANDS.validate_json(message.value or b"")
            except ValidationError as exc:
                log.error("bad bill command %s: %s", source, exc)
                continue
            now = now_utc()
            try:
                if isinstance(command, RunBills):
                    bills = billing.run(command.account, from_ms(command.at) if command.at else now)
                elif isinstance(command, Tick):
                    bills = billing.tick(command.partition, now)
                else:
                    bills = billing.change_status(command, now)
            except LifecycleError as exc:
                log.warning("bill command %s refused: %s", source, exc)
                continue
            except Exception:
                log.exception("bill command %s failed", source)
                continue
            if bills:
                await publish(bills, source)

    @app.timer(interval=settings.bill_run_interval_s, on_leader=True)
    async def ticks() -> None:
        at = time.time_ns() // 1_000_000
        for partition in range(partitions):
            tick = Tick(partition=partition, at=at)
            await commands.send(
                key=b"tick", value=tick.model_dump_json().encode(), partition=partition
            )

    @app.page(pages.BILLS)
    class AccountBills(View):
        """Every bill of one account (latest versions), from the worker that owns it."""

        @when_ready(app)
        async def get(self, request: Request) -> Response:
            return await on_owner(
                app, billing.index, self, request, pages.parse_account, self.answer
            )

        async def answer(self, account: str) -> Response:
            bills = sorted(billing.bills_of(account).values(), key=lambda b: b.startDate)
            body = b"[" + b",".join(bill.model_dump_json().encode() for bill in bills) + b"]"
            return self.bytes(body, content_type="application/json")

    del handle, ticks, AccountBills
