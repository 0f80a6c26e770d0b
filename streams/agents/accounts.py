"""Accounts agent: `stripe.events` → the `accounts` and `accountplans` tables
(`streams.accounts`), and the account read pages.

Worker pages (served by the worker that owns the account's partition; faust forwards
the request there): `GET /accounts?account=` and `GET /accountplans?account=`
(`streams.pages`). Counters go to the worker's `context.stats` (`accounts_applied`,
`_ignored`, `_rejected`, `_unmapped`).
"""

from __future__ import annotations

import faust
from faust.web import Request, Response, View

from streams import pages
from streams.accounts.intake import StripeEventIntake, plans_document
from streams.accounts.state import AccountState
from streams.agents.routing import on_owner
from streams.context import MeterlineApp, WorkerContext
from streams.readiness import when_ready
from streams.tables import account_table
from streams.topics import (
    COUNTER_ADJUSTMENTS,
    STRIPE_EVENTS,
    STRIPE_EVENTS_REJECTED,
    faust_topic,
)


def register(app: MeterlineApp, context: WorkerContext) -> None:
    if context.catalog is None:
        raise RuntimeError("the catalog agent must be registered before the accounts agent")
    partitions = context.topics.partitions
    state = AccountState(
        account_table(app, "accounts", partitions, "Account by account code"),
        account_table(app, "accountplans", partitions, "Account Plan by <account>|<plan id>"),
    )
    context.accounts = state  # the usage and billing agents read accounts and plans
    state.plans_table.watch(context.stale_facts.add)  # plans split usage windows
    app.on_rebalance_complete.connect(state.invalidate)
    rejected = faust_topic(app, context.topics, STRIPE_EVENTS_REJECTED)
    counts = faust_topic(app, context.topics, COUNTER_ADJUSTMENTS)  # seats from Stripe
    intake = StripeEventIntake(state, rejected, context.catalog, context.stats, counts)

    @app.agent(faust_topic(app, context.topics, STRIPE_EVENTS), name="accounts", concurrency=1)
    async def accounts(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            # 1. tables written, rejections delivered  2. writes confirmed  3. faust acks
            await intake.handle(event.message)
            await intake.confirm()

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
