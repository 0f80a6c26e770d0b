"""The accounts agent: `stripe.events` → the `accounts` and `accountplans` tables.

For each event, one at a time (concurrency 1, so no offset is committed past it):
  1. decode the raw bytes; the message key must be the event's customer (co-partitioning)
  2. read the account and its plans, call `apply_event` with the live catalog
  3. write back every upserted plan, then the account
  4. publish to `stripe.events.rejected`: the event itself when it is invalid or anything
     failed (reason + `stripe.events[p]@o`), and one record per unmapped price
  faust flushes the producer before it commits the offset, so 3 and 4 are in Kafka first.

Both tables are account-partitioned (`streams.tables`): `accounts` by account code
(= Stripe customer id), `accountplans` by `<account>|<plan id>`. An account's plans are
found through an in-memory index of the plan keys, built from the table on first use and
again after every rebalance (recovery changes the table behind the agent's back); a
key of a partition this worker lost is skipped because the table no longer holds it.

Unmapped prices. A subscription item whose price maps to no plan is stored as an
UNMAPPED account plan and reported (log, counter, a record on `stripe.events.rejected`
with reason "unmapped price …"). Once the mapping is in the catalog, the next event of
that subscription maps it, keeping the plan's id and start date (renewals, updates; an
operator can trigger one at once by changing the subscription in Stripe, e.g. its
metadata). Replaying `stripe.events` (resetting this app's consumer group offsets) does
not: every replayed event is a duplicate or stale against the stored state, by design.

Worker pages (served by the worker that owns the account's partition; faust forwards
the request there): `GET /accounts?account=` and `GET /accountplans?account=`
(`streams.pages`). Counters go to the worker's `context.stats` (`accounts_applied`,
`_ignored`, `_rejected`, `_unmapped`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import faust
import orjson
from faust.web import Request, Response, View

from streams import pages
from streams.accounts import AccountsChange, InvalidStripeEvent, UnmappedPrice, apply_event
from streams.accounts import customer_key as event_customer
from streams.agents.routing import on_owner
from streams.delivery import deliver
from streams.readiness import when_ready
from streams.schemas.accounts import Account, AccountPlan
from streams.tables import AccountTable, account_key, account_of, account_table, table_key
from streams.topics import ACCOUNTS_REJECTED, STRIPE_EVENTS, faust_topic

if TYPE_CHECKING:
    from streams.app import MeterlineApp, WorkerContext
    from streams.schemas.catalog import Catalog

log = logging.getLogger(__name__)


# --- pure ------------------------------------------------------------------------------


def decode_event(raw: bytes | None) -> dict[str, Any]:
    """The Stripe event in a `stripe.events` message; InvalidStripeEvent otherwise."""
    if not raw:
        raise InvalidStripeEvent("the message has no value")
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidStripeEvent(f"the message is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise InvalidStripeEvent("the message is not a JSON object")
    return event


def check_key(key: bytes | None, event: dict[str, Any]) -> str | None:
    """The event's customer; InvalidStripeEvent when the message is keyed by another one
    (its state would live on another partition)."""
    customer = event_customer(event)
    if customer is not None and key is not None and key.decode("utf-8", "replace") != customer:
        raise InvalidStripeEvent(
            f"the message key {key!r} is not the event's customer {customer!r}"
        )
    return customer


def rejection(reason: str, source: str, raw: bytes | None, **extra: Any) -> bytes:
    """A `stripe.events.rejected` record: the reason, where the event was, the event."""
    original: Any
    try:
        original = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        original = raw.decode("utf-8", "replace") if raw else None
    return orjson.dumps({"reason": reason, "source": source, "event": original, **extra})


def unmapped_reason(unmapped: UnmappedPrice) -> str:
    price = unmapped.stripePriceId or unmapped.stripeLookupKey or "?"
    return f"unmapped price {price}: {unmapped.reason}"


def plans_document(plans: Iterable[AccountPlan]) -> bytes:
    """The list answer of the read API: `{"data": [...]}`, oldest plan first."""
    ordered = sorted(plans, key=lambda p: (p.startDate, p.id))
    return orjson.dumps({"data": [p.model_dump(mode="json") for p in ordered]})


# --- state -----------------------------------------------------------------------------


class AccountState:
    """An account and its plans in the two account tables."""

    def __init__(self, accounts: AccountTable, plans: AccountTable) -> None:
        self.accounts = accounts
        self.plans_table = plans
        self._plan_keys: dict[str, set[bytes]] | None = None

    def invalidate(self, *_: Any, **__: Any) -> None:
        """Forget the plan index (after a rebalance the table holds other partitions)."""
        self._plan_keys = None

    def account(self, code: str) -> Account | None:
        raw = self.accounts.get(account_key(code))
        return None if raw is None else Account.model_validate_json(raw)

    def account_json(self, code: str) -> bytes | None:
        raw: bytes | None = self.accounts.get(account_key(code))
        return raw

    def plans(self, code: str) -> list[AccountPlan]:
        out = []
        for key in sorted(self._index().get(code, ())):
            raw = self.plans_table.get(key)
            if raw is not None:
                out.append(AccountPlan.model_validate_json(raw))
        return out

    def account_codes(self) -> list[str]:
        """Every account with at least one plan on this worker's partitions."""
        return sorted(self._index())

    def write(self, change: AccountsChange) -> None:
        index = self._index()
        for plan in change.plans:
            key = table_key(plan.accountCode, plan.id).encode()
            self.plans_table[key] = plan.model_dump_json().encode()
            index.setdefault(plan.accountCode, set()).add(key)
        if change.account is not None:
            self.accounts[account_key(change.account.code)] = (
                change.account.model_dump_json().encode()
            )

    def _index(self) -> dict[str, set[bytes]]:
        if self._plan_keys is None:
            index: dict[str, set[bytes]] = {}
            for key in self.plans_table:
                index.setdefault(account_of(key), set()).add(key)
            self._plan_keys = index
            log.info("account plan index built: %d accounts", len(index))
        return self._plan_keys


# --- agent -----------------------------------------------------------------------------


class AccountsAgent:
    """What the agent loop does with one message (a class so the loop stays a few lines)."""

    def __init__(
        self, state: AccountState, rejected: faust.TopicT, catalog: Any, stats: Counter[str]
    ) -> None:
        self.state = state
        self.rejected = rejected
        self.catalog = catalog  # a LiveCatalog: `.current()` is the catalog of now
        self.stats = stats

    async def handle(self, message: Any) -> None:
        source = f"{message.topic}[{message.partition}]@{message.offset}"
        raw: bytes | None = message.value
        try:
            unmapped = self._apply(message.key, raw, source)
        except Exception as exc:  # faust would ack a swallowed event: dead-letter it
            reason = str(exc) if isinstance(exc, InvalidStripeEvent) else repr(exc)
            self.stats["accounts_rejected"] += 1
            unexpected = not isinstance(exc, InvalidStripeEvent)
            log.warning("%s rejected: %s", source, reason, exc_info=unexpected)
            await self._reject(message.key, rejection(reason, source, raw))
            return
        for item in unmapped:
            self.stats["accounts_unmapped"] += 1
            reason = unmapped_reason(item)
            log.warning(
                "%s account %s plan %s: %s", source, item.accountCode, item.accountPlanId, reason
            )
            record = rejection(reason, source, raw, unmapped=item.model_dump(mode="json"))
            await self._reject(item.accountCode.encode(), record)

    def _apply(self, key: bytes | None, raw: bytes | None, source: str) -> list[UnmappedPrice]:
        event = decode_event(raw)
        customer = check_key(key, event)
        account = self.state.account(customer) if customer else None
        plans = self.state.plans(customer) if customer else []
        catalog: Catalog = self.catalog.current()
        change = apply_event(event, account=account, plans=plans, catalog=catalog)
        ids = f"{event.get('id')} ({event.get('type')}) customer {customer}"
        if change.ignored_reason is not None:
            self.stats["accounts_ignored"] += 1
            log.info("%s %s ignored: %s", source, ids, change.ignored_reason)
            return []
        self.state.write(change)
        self.stats["accounts_applied"] += 1
        log.info(
            "%s %s applied: account %s, plans %s",
            source,
            ids,
            "written" if change.account else "unchanged",
            [p.id for p in change.plans],
        )
        return change.unmapped

    async def _reject(self, key: bytes | None, record: bytes) -> None:
        await deliver(self.rejected, [(key, record, None)])

    async def confirm(self) -> None:
        """Wait until Kafka holds every table write (before faust acks the event)."""
        await self.state.accounts.confirm()
        await self.state.plans_table.confirm()


def register(app: MeterlineApp, context: WorkerContext) -> None:
    if context.catalog is None:
        raise RuntimeError("the catalog agent must be registered before the accounts agent")
    partitions = context.topics.partitions
    state = AccountState(
        account_table(app, "accounts", partitions, "Account by account code"),
        account_table(app, "accountplans", partitions, "Account Plan by <account>|<plan id>"),
    )
    context.tables["accounts"] = state.accounts
    context.tables["accountplans"] = state.plans_table
    context.accounts = state  # the billing agent reads accounts and plans through it
    app.on_rebalance_complete.connect(state.invalidate)
    rejected = faust_topic(app, context.topics, ACCOUNTS_REJECTED)
    worker = AccountsAgent(state, rejected, context.catalog, context.stats)

    @app.agent(faust_topic(app, context.topics, STRIPE_EVENTS), name="accounts", concurrency=1)
    async def accounts(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            # 1. tables written, rejections delivered  2. writes confirmed  3. faust acks
            await worker.handle(event.message)
            await worker.confirm()

    _register_pages(app, state)
    del accounts


def _register_pages(app: MeterlineApp, state: AccountState) -> None:
    def not_found(view: View, code: str) -> Response:
        return view.error(404, f"account {code!r} not found", code=code)

    @app.page(pages.ACCOUNT)
    class AccountPage(View):
        @when_ready(app)
        async def get(self, request: Request) -> Response:
            return await on_owner(
                app, state.accounts, self, request, pages.parse_account, self.answer
            )

        async def answer(self, code: str) -> Response:
            raw = state.account_json(code)
            if raw is None:
                return not_found(self, code)
            return self.bytes(raw, content_type="application/json")

    @app.page(pages.ACCOUNT_PLANS)
    class AccountPlansPage(View):
        @when_ready(app)
        async def get(self, request: Request) -> Response:
            return await on_owner(
                app, state.plans_table, self, request, pages.parse_account, self.answer
            )

        async def answer(self, code: str) -> Response:
            if state.account_json(code) is None:
                return not_found(self, code)
            return self.bytes(plans_document(state.plans(code)), content_type="application/json")

    del AccountPage, AccountPlansPage
