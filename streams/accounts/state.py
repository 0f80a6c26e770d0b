"""Accounts and their plans as a worker holds them: the `accounts` and `accountplans`
tables (account-partitioned, `streams.tables`).

`accounts` is keyed by account code (= Stripe customer id), `accountplans` by
`<account>|<plan id>`. An account's plans are found through an in-memory index of the
plan keys, built from the table on first use and again after every rebalance (recovery
changes the table behind the agent's back); a key of a partition this worker lost is
skipped because the table no longer holds it.
"""

from __future__ import annotations

import logging
from typing import Any

from streams.accounts.events import AccountsChange
from streams.clock import epoch_ms
from streams.schemas.accounts import Account, AccountPlan
from streams.tables import AccountTable, account_key, account_of, table_key

log = logging.getLogger(__name__)


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

    def boundaries(self, code: str) -> list[int]:
        """Billing boundaries of the account's plans (epoch ms): usage windows split there."""
        out: set[int] = set()
        for plan in self.plans(code):
            for moment in (
                plan.startDate,
                plan.endDate,
                plan.currentPeriodStart,
                plan.currentPeriodEnd,
            ):
                if moment is not None:
                    out.add(epoch_ms(moment))
        return sorted(out)

    async def confirm(self) -> None:
        """Wait until Kafka holds every write to both tables (`AccountTable.confirm`)."""
        await self.accounts.confirm()
        await self.plans_table.confirm()
