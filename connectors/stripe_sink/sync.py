"""One bill version into Stripe: the first step of the sink's order
  1. write to Stripe (here)  2. record in stripe.sync, acked  3. store the offset (sink.py)

Invoice mode: find or create the bill's draft invoice, then one item per line on it.
Subscription mode: one pending item per line on the customer (and subscription).

Before creating an item for a line the ledger does not know, the bill's existing items
are listed and adopted by metadata (bill_id, line_id): a crash between a Stripe write
and its ledger record, retried more than 24 h later or with other parameters, must not
create a second item. A new invoice is the exception: nothing can be on it yet.

Raises `StripeFailure` (retryable: try the whole version again later; every write is
idempotent) or `SyncRefused` (dead-letter this version).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from connectors.stripe_sink.diff import (
    BillRejected,
    Create,
    Delete,
    Desired,
    ItemDiff,
    Update,
    desired_items,
    diff,
)
from connectors.stripe_sink.failures import StripeFailure
from connectors.stripe_sink.keys import Operation, idempotency_key
from connectors.stripe_sink.ledger import LedgerEntry, LedgerItem
from connectors.stripe_sink.policy import Mode, SyncPolicy
from connectors.stripe_sink.records import Conflict
from connectors.stripe_sink.stripe_api import Invoice, Item, StripeGateway
from streams.money import to_stripe_amount
from streams.schemas.bill import Bill

TOTAL = "*total"  # conflicts key of a bill-level drift
FINALIZE = "*finalize"  # conflicts key of an invoice that could not be finalized
NOT_EDITABLE = frozenset({"invoice_not_editable", "resource_missing"})


class SyncRefused(Exception):
    """A bill version that cannot be synced; the reason names what and why."""

    def __init__(self, reason: str, failure: StripeFailure | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure


@dataclass(frozen=True)
class SyncResult:
    entry: LedgerEntry
    conflicts: list[Conflict]
    """Problems new in this version (the ones `entry.conflicts` did not already hold)."""
    writes: int


@dataclass(frozen=True)
class _Done:
    """One line's outcome: its item now (None: deleted) and a conflict, if any."""

    line_id: str
    item: LedgerItem | None
    conflict: Conflict | None = None


class Syncer:
    def __init__(self, gateway: StripeGateway, policy: SyncPolicy, pool: Executor) -> None:
        self.gateway = gateway
        self.policy = policy
        self.pool = pool

    def sync(self, bill: Bill, previous: LedgerEntry | None, mode: Mode) -> SyncResult:
        try:
            wanted = desired_items(bill)
        except BillRejected as error:
            raise SyncRefused(str(error)) from None
        if not bill.stripeCustomerId:
            raise SyncRefused(
                f"stripeCustomerId: missing; account {bill.accountCode} is not linked to a "
                "Stripe customer"
            )
        items = dict(previous.items) if previous else {}
        invoice_id = previous.invoiceId if previous else None
        finalized = previous.finalized if previous else False
        writes, fresh = 0, False
        if mode is Mode.INVOICE and invoice_id is None:
            invoice, fresh = self._invoice(bill)
            invoice_id, finalized, writes = invoice.id, not invoice.draft, int(fresh)
        changes = diff(wanted, items, final=finalized)
        if changes.creates and not fresh:
            adopted = self._adopt(
                bill, mode, invoice_id, {c.desired.line_id for c in changes.creates}
            )
            if adopted:
                items.update(adopted)
                changes = diff(wanted, items, final=finalized)
        conflicts = [
            Conflict(b.line_id, b.item.itemId if b.item else None, b.reason)
            for b in changes.blocked
        ]
        for done in self._apply(bill, mode, invoice_id, changes):
            if done.item is None:
                items.pop(done.line_id, None)
            else:
                items[done.line_id] = done.item
            if done.conflict is not None:
                conflicts.append(done.conflict)
        writes += changes.writes
        drift = _drift(bill, items)
        if drift is not None:
            conflicts.append(drift)
        if self.policy.finalizes(bill, mode) and not finalized and invoice_id is not None:
            finalized, problem = self._finalize(bill, invoice_id, conflicts)
            writes += 1 if problem is None else 0
            if problem is not None:
                conflicts.append(problem)
        entry = LedgerEntry(
            billId=bill.id,
            accountCode=bill.accountCode,
            version=bill.version,
            status=bill.status,
            mode=mode,
            invoiceId=invoice_id,
            items=items,
            finalized=finalized,
            conflicts={_key(c): c.reason for c in conflicts},
        )
        known = previous.conflicts if previous else {}
        new = [c for c in conflicts if known.get(_key(c)) != c.reason]
        return SyncResult(entry, new, writes)

    # Invoice -------------------------------------------------------------------------

    def _invoice(self, bill: Bill) -> tuple[Invoice, bool]:
        """The bill's invoice if Stripe has one (a crash before its ledger record), else a
        new draft; True when new."""
        customer = str(bill.stripeCustomerId)
        try:
            for invoice in self.gateway.invoices_of(customer):
                if invoice.metadata.get("bill_id") == bill.id:
                    return invoice, False
            key = idempotency_key(bill.id, bill.version, "", Operation.CREATE_INVOICE)
            return self.gateway.create_invoice(self._invoice_params(bill), key), True
        except StripeFailure as failure:
            raise _refused(bill, "creating the invoice", failure) from None

    def _invoice_params(self, bill: Bill) -> dict[str, Any]:
        params: dict[str, Any] = {
            "customer": bill.stripeCustomerId,
            "currency": bill.currency.lower(),
            "auto_advance": False,  # stays a draft until the bill is approved
            "pending_invoice_items_behavior": "exclude",  # only this bill's items
            "collection_method": self.policy.collection_method,
            "description": (
                f"{bill.planCode}: {bill.startDate:%Y-%m-%d} to {bill.endDate:%Y-%m-%d}"
            ),
            "metadata": {"bill_id": bill.id, "account": bill.accountCode, "plan": bill.planCode},
        }
        if self.policy.collection_method == "send_invoice":
            params["days_until_due"] = self.policy.days_until_due
        return params

    def _finalize(
        self, bill: Bill, invoice_id: str, conflicts: list[Conflict]
    ) -> tuple[bool, Conflict | None]:
        """(finalized, problem): never finalizes an invoice that disagrees with the bill."""
        if conflicts:
            reason = f"invoice {invoice_id} not finalized: Stripe does not match the bill"
            return False, Conflict(FINALIZE, None, reason, kind="conflict")
        key = idempotency_key(bill.id, bill.version, "", Operation.FINALIZE_INVOICE)
        try:
            self.gateway.finalize_invoice(invoice_id, key)
            return True, None
        except StripeFailure as failure:
            if failure.retryable:
                raise
            # Finalized already (by us before a crash, or by hand)? Then it is done.
            if not self.gateway.retrieve_invoice(invoice_id).draft:
                return True, None
            reason = f"Stripe refused to finalize invoice {invoice_id}"
            return False, Conflict(FINALIZE, None, reason, failure.info)

    # Items ---------------------------------------------------------------------------

    def _adopt(
        self, bill: Bill, mode: Mode, invoice_id: str | None, lines: set[str]
    ) -> dict[str, LedgerItem]:
        """Items Stripe already holds for these lines of this bill."""
        try:
            if mode is Mode.INVOICE:
                found = self.gateway.items_of(invoice=invoice_id)
            else:
                found = self.gateway.items_of(customer=str(bill.stripeCustomerId))
        except StripeFailure as failure:
            raise _refused(bill, "listing existing items", failure) from None
        adopted: dict[str, LedgerItem] = {}
        for item in sorted(found, key=lambda i: i.id):
            line_id = item.metadata.get("line_id")
            if item.metadata.get("bill_id") == bill.id and line_id in lines:
                adopted.setdefault(str(line_id), item.ledger_item())
        return adopted

    def _apply(
        self, bill: Bill, mode: Mode, invoice_id: str | None, changes: ItemDiff
    ) -> list[_Done]:
        """Runs the diff's writes concurrently (different items never interfere)."""
        tasks: list[Callable[[], _Done]] = [
            *(lambda c=c: self._create(bill, mode, invoice_id, c) for c in changes.creates),
            *(lambda u=u: self._update(bill, u) for u in changes.updates),
            *(lambda d=d: self._delete(d) for d in changes.deletes),
        ]
        futures = [self.pool.submit(task) for task in tasks]
        done: list[_Done] = []
        refused: SyncRefused | None = None
        retry: StripeFailure | None = None
        for future in futures:
            try:
                done.append(future.result())
            except SyncRefused as error:
                refused = refused or error
            except StripeFailure as failure:
                if retry is None or (failure.retry_after or 0) > (retry.retry_after or 0):
                    retry = failure
        if refused is not None:
            raise refused
        if retry is not None:
            raise retry
        return done

    def _create(self, bill: Bill, mode: Mode, invoice_id: str | None, create: Create) -> _Done:
        desired = create.desired
        params = {
            "customer": bill.stripeCustomerId,
            **_item_fields(bill, desired),
            "currency": desired.currency,
        }
        if mode is Mode.INVOICE:
            params["invoice"] = invoice_id
        elif bill.stripeSubscriptionId:
            params["subscription"] = bill.stripeSubscriptionId
        key = idempotency_key(bill.id, bill.version, desired.line_id, Operation.CREATE_ITEM)
        try:
            item = self.gateway.create_item(params, key)
        except StripeFailure as failure:
            if failure.retryable:
                raise
            if failure.code == "invoice_not_editable":
                reason = f"new line, but invoice {invoice_id} can no longer take items: not added"
                return _Done(
                    desired.line_id, None, Conflict(desired.line_id, None, reason, failure.info)
                )
            raise _refused(bill, f"creating the item of line {desired.line_id}", failure) from None
        return _Done(desired.line_id, _confirmed(item, desired))

    def _update(self, bill: Bill, update: Update) -> _Done:
        desired, item = update.desired, update.item
        key = idempotency_key(bill.id, bill.version, desired.line_id, Operation.UPDATE_ITEM)
        try:
            updated = self.gateway.update_item(item.itemId, _item_fields(bill, desired), key)
        except StripeFailure as failure:
            if failure.retryable:
                raise
            return self._refused_change(desired.line_id, item, "changed", failure)
        return _Done(desired.line_id, _confirmed(updated, desired))

    def _delete(self, delete: Delete) -> _Done:
        try:
            self.gateway.delete_item(delete.item.itemId)
        except StripeFailure as failure:
            if failure.retryable:
                raise
            if failure.code != "resource_missing":  # missing: deleted already
                return self._refused_change(delete.line_id, delete.item, "deleted", failure)
        return _Done(delete.line_id, None)

    @staticmethod
    def _refused_change(line_id: str, item: LedgerItem, verb: str, failure: StripeFailure) -> _Done:
        """Stripe refused to change an item: keep it as it is and never try a replacement."""
        gone = failure.code == "resource_missing"
        reason = (
            f"item {item.itemId} no longer exists in Stripe; not recreated"
            if gone
            else f"Stripe refused: item {item.itemId} could not be {verb}"
        )
        kept = item.model_copy(
            update={"editable": item.editable and failure.code not in NOT_EDITABLE}
        )
        return _Done(line_id, kept, Conflict(line_id, item.itemId, reason, failure.info))


def _item_fields(bill: Bill, desired: Desired) -> dict[str, Any]:
    metadata = {
        "bill_id": bill.id,
        "line_id": desired.line_id,
        "version": str(bill.version),
        "account": bill.accountCode,
    }
    if desired.segment is not None:  # Stripe keeps metadata values up to 500 characters
        metadata["segment"] = desired.segment[:500]
    return {
        "amount": desired.amount,
        "description": desired.description,
        "period": {"start": desired.period_start, "end": desired.period_end},
        "metadata": metadata,
    }


def _confirmed(item: Item, desired: Desired) -> LedgerItem:
    """The ledger's record of what Stripe answered (its amount, not the one we sent)."""
    confirmed = item.ledger_item()
    if not item.description:  # Stripe echoes what we sent; keep the ledger comparable
        confirmed = confirmed.model_copy(update={"description": desired.description})
    return confirmed


def _drift(bill: Bill, items: Mapping[str, LedgerItem]) -> Conflict | None:
    """Stripe's items must add up to the bill total, to the minor unit."""
    expected = to_stripe_amount(bill.total, bill.currency)
    held = sum(item.amount for item in items.values())
    if held == expected:
        return None
    reason = (
        f"Stripe's items for bill {bill.id} add up to {held}, the bill total is {expected} "
        f"({bill.currency.lower()} minor units)"
    )
    return Conflict(TOTAL, None, reason, kind="drift")


def _key(conflict: Conflict) -> str:
    return conflict.line_id or TOTAL


def _refused(bill: Bill, doing: str, failure: StripeFailure) -> Exception:
    """Retryable failures pass through; others become a refusal naming the account."""
    if failure.retryable:
        return failure
    if failure.code == "resource_missing" and failure.info.param in ("customer", "subscription"):
        what = str(failure.info.param)
        which = bill.stripeCustomerId if what == "customer" else bill.stripeSubscriptionId
        return SyncRefused(
            f"account {bill.accountCode}: Stripe has no {what} {which} ({doing})", failure
        )
    return SyncRefused(f"Stripe refused {doing} for bill {bill.id}", failure)
