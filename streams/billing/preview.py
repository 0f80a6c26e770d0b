"""Bill previews: the bill an account would get for the period containing a moment, with
the usage known now.

A preview is what a bill run at that moment makes (`Billing.run`, the engine of real
bills), laid over the stored bills (a locked or unchanged bill is the stored one), and
nothing more: it is never stored, never published to `bills`, so it never reaches
Stripe. Its `generatedAt` is the moment previewed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from streams.billing.runs import billable
from streams.billing.state import Billing
from streams.schemas.accounts import AccountPlan
from streams.schemas.bill import Bill
from streams.schemas.catalog import Catalog


class NoPreview(LookupError):
    """Why there is no bill to preview (a 404): the parameter it is about, and the reason."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason

    def document(self) -> dict[str, str]:
        return {"error": "not_found", "field": self.parameter, "reason": self.reason}


def preview(billing: Billing, account: str, at: datetime) -> list[Bill]:
    """The bill of each account plan of `account` whose period contains `at`.

    Raises NoPreview naming `account` (unknown) or `at` (no priced plan on that date).
    """
    accounts, catalog = billing.context.accounts, billing.context.catalog
    if accounts is None or catalog is None:
        raise RuntimeError("the accounts and catalog agents must be registered before previews")
    plans = accounts.plans(account)
    if accounts.account(account) is None and not plans:
        raise NoPreview("account", f"account {account!r} not found")
    covering = {plan.id for plan in priced_plans(account, plans, catalog.current(), at)}
    current = {**billing.bills_of(account), **{bill.id: bill for bill in billing.run(account, at)}}
    found = sorted(
        (bill for bill in bills_at(current.values(), at) if bill.accountPlanId in covering),
        key=lambda bill: bill.accountPlanId,
    )
    if not found:  # a period the run does not bill (the plan starts after `at`, ...)
        raise NoPreview("at", f"no bill period of account {account!r} contains {at.isoformat()}")
    return found


def priced_plans(
    account: str, plans: Iterable[AccountPlan], catalog: Catalog, at: datetime
) -> list[AccountPlan]:
    """The account plans active at `at` with a plan in the catalog; NoPreview (naming
    `at`) saying why when there is none."""
    active = [
        plan
        for plan in plans
        if plan.startDate <= at and (plan.endDate is None or at < plan.endDate)
    ]
    if not active:
        raise NoPreview("at", f"account {account!r} has no account plan on {at.isoformat()}")
    priced = [plan for plan in active if billable(plan) and plan.planCode in catalog.plans]
    if priced:
        return priced
    reasons = [
        f"account plan {plan.id} is not mapped to a plan"
        if not billable(plan)
        else f"plan {plan.planCode!r} of account plan {plan.id} is not in the catalog"
        for plan in active
    ]
    raise NoPreview(
        "at", f"account {account!r} has no priced plan on {at.isoformat()}: " + "; ".join(reasons)
    )


def bills_at(bills: Iterable[Bill], at: datetime) -> list[Bill]:
    return [bill for bill in bills if bill.startDate <= at < bill.endDate]
