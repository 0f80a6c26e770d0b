"""Balances agent: `balances` → the `balances` table (`streams.balances`).

Bill runs read each account's credit grants through `context.balances`; the `/balances`
page answers an account's grants and what its latest bills left of each. Counts go to the
worker's `context.stats` (`balance_grants_recorded`, `_duplicate`, `_rejected`).
"""

from __future__ import annotations

import faust
import orjson
from faust.web import Request, Response, View

from streams import pages
from streams.agents.routing import on_owner
from streams.balances.intake import BalanceIntake
from streams.balances.state import BalanceState, remaining
from streams.context import MeterlineApp, WorkerContext
from streams.readiness import when_ready
from streams.tables import account_table
from streams.topics import BALANCES, BALANCES_REJECTED, faust_topic


def register(app: MeterlineApp, context: WorkerContext) -> None:
    state = BalanceState(
        account_table(
            app, "balances", context.topics.partitions, "Credit grants of <account> by uid"
        )
    )
    context.balances = state  # bill runs read the grants
    rejected = faust_topic(app, context.topics, BALANCES_REJECTED)
    intake = BalanceIntake(state, rejected, context.stats)
    source = faust_topic(app, context.topics, BALANCES)

    @app.agent(source, name="balances", concurrency=1)
    async def balances(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            # 1. table written or rejection delivered  2. write confirmed  3. faust acks
            await intake.handle(event.message)
            await intake.confirm()

    @app.page(pages.BALANCES)
    class AccountBalances(View):
        """An account's credit grants and what is left of each, from the worker that owns it."""

        @when_ready(app)
        async def get(self, request: Request) -> Response:
            return await on_owner(app, state.table, self, request, pages.parse_account, self.answer)

        async def answer(self, account: str) -> Response:
            bills = context.bills(account) if context.bills is not None else {}
            found = remaining(state.grants(account), bills.values())
            body = orjson.dumps({"data": [b.model_dump(mode="json") for b in found]})
            return self.bytes(body, content_type="application/json")

    del balances, AccountBalances
