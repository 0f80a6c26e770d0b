"""The bill diff: what Stripe should hold for a bill version, compared with what the ledger
says it holds, as create / update / delete operations per bill line. Pure.

A line maps to exactly one invoice item: created once, then updated in place or
deleted. An item Stripe no longer lets us change is never replaced: the change is
`Blocked` and becomes a conflict record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from connectors.stripe_sink.ledger import LedgerItem
from streams.money import THREE_DECIMAL, MoneyError, to_stripe_amount
from streams.schemas.bill import Bill
from streams.schemas.catalog import segment_id


class BillRejected(Exception):
    """A bill version the sink cannot write to Stripe, naming the field and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


@dataclass(frozen=True)
class Desired:
    """An invoice item as the bill version wants it (amount in Stripe's integer units)."""

    line_id: str
    amount: int
    currency: str
    description: str
    period_start: int
    period_end: int
    segment: str | None = None  # a segment line's segment id, kept in the item's metadata

    def matches(self, item: LedgerItem) -> bool:
        return (
            item.amount == self.amount
            and item.currency == self.currency
            and item.description == self.description
            and item.periodStart == self.period_start
            and item.periodEnd == self.period_end
        )


def desired_items(bill: Bill) -> dict[str, Desired]:
    """One desired item per bill line; `BillRejected` for an amount Stripe cannot take."""
    currency = bill.currency.lower()
    wanted = {}
    for index, line in enumerate(bill.lines):
        where = f"lines[{index}].subtotal"
        try:
            amount = to_stripe_amount(line.subtotal, bill.currency)
        except MoneyError as error:
            raise BillRejected(where, str(error)) from None
        if bill.currency.upper() in THREE_DECIMAL and amount % 10:
            raise BillRejected(
                where,
                f"{line.subtotal} {bill.currency} is not a multiple of 0.010: Stripe takes "
                "three-decimal currencies in steps of 10 minor units",
            )
        wanted[line.id] = Desired(
            line_id=line.id,
            amount=amount,
            currency=currency,
            description=line.description or line.id,
            period_start=_unix(line.servicePeriodStartDate),
            period_end=_unix(line.servicePeriodEndDate),
            segment=None if line.segment is None else segment_id(line.segment),
        )
    return wanted


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


@dataclass(frozen=True)
class Create:
    desired: Desired


@dataclass(frozen=True)
class Update:
    item: LedgerItem
    desired: Desired


@dataclass(frozen=True)
class Delete:
    line_id: str
    item: LedgerItem


@dataclass(frozen=True)
class Blocked:
    """A change Stripe would refuse; reported, never worked around."""

    line_id: str
    item: LedgerItem | None
    reason: str


@dataclass(frozen=True)
class ItemDiff:
    """The bill diff: operations per bill line, and the items that stay as they are."""

    creates: list[Create] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    blocked: list[Blocked] = field(default_factory=list)
    kept: dict[str, LedgerItem] = field(default_factory=dict)

    @property
    def writes(self) -> int:
        return len(self.creates) + len(self.updates) + len(self.deletes)


def diff(
    wanted: Mapping[str, Desired], current: Mapping[str, LedgerItem], *, final: bool = False
) -> ItemDiff:
    """Operations that turn `current` into `wanted`; `final`: the invoice takes no change."""
    changes = ItemDiff()
    for line_id, desired in wanted.items():
        item = current.get(line_id)
        if item is None:
            if final:
                changes.blocked.append(Blocked(line_id, None, _final_new_line(desired)))
            else:
                changes.creates.append(Create(desired))
        elif desired.matches(item):
            changes.kept[line_id] = item
        elif final or not item.editable:
            changes.blocked.append(Blocked(line_id, item, _not_editable(item, desired)))
        elif item.currency != desired.currency:
            changes.blocked.append(Blocked(line_id, item, _currency_changed(item, desired)))
        else:
            changes.updates.append(Update(item, desired))
    for line_id, item in current.items():
        if line_id in wanted:
            continue
        if final or not item.editable:
            reason = f"line removed from the bill, but item {item.itemId} can no longer be deleted"
            changes.blocked.append(Blocked(line_id, item, reason))
        else:
            changes.deletes.append(Delete(line_id, item))
    return changes


def _final_new_line(desired: Desired) -> str:
    return (
        f"new line ({desired.amount} {desired.currency}) after the invoice was finalized: "
        "not added (a finalized invoice takes no new item, and none is created elsewhere)"
    )


def _not_editable(item: LedgerItem, desired: Desired) -> str:
    return (
        f"item {item.itemId} can no longer be changed (its invoice is final): Stripe keeps "
        f"{item.amount} {item.currency} {item.description!r}, the bill now says "
        f"{desired.amount} {desired.currency} {desired.description!r}"
    )


def _currency_changed(item: LedgerItem, desired: Desired) -> str:
    return (
        f"the line's currency changed from {item.currency} to {desired.currency}: "
        f"Stripe cannot change item {item.itemId}'s currency"
    )
