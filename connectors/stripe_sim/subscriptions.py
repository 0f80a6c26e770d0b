"""Subscriptions: create (with a first invoice), update items, cancel, and renew.

Renewal (`advance`, the simulator's test clock) opens the next period and drafts a
`subscription_cycle` invoice for the period that ended: licensed prices for the new period
in advance plus the customer's pending invoice items (see `invoicing`). Like Stripe, the
draft finalizes an hour later (`automatically_finalizes_at`) and, when charged
automatically, is paid. Metered prices bill nothing themselves: usage arrives as items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from connectors.stripe_sim.errors import StripeError, invalid_param, missing_param, refused
from connectors.stripe_sim.forms import Params
from connectors.stripe_sim.invoicing import finalize, pull_pending_items
from connectors.stripe_sim.periods import boundary
from connectors.stripe_sim.records import (
    Invoice,
    InvoiceLine,
    Period,
    Price,
    Recurring,
    Subscription,
    SubscriptionItem,
)
from connectors.stripe_sim.store import Store, new_id, snapshot

_EDITABLE = (
    "items",
    "metadata",
    "description",
    "cancel_at_period_end",
    "collection_method",
    "days_until_due",
    "default_payment_method",
    "payment_behavior",
    "proration_behavior",
    "off_session",
    "automatic_tax",
)
_CREATE = (*_EDITABLE, "customer", "currency", "billing_cycle_anchor")
_FINALIZE_DELAY = 3_600
_MAX_RENEWALS = 1_000


@dataclass
class Advanced:
    """What one clock advance did, for the caller of `/_sim/advance`."""

    now: int
    renewed: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    invoices_created: list[str] = field(default_factory=list)
    invoices_finalized: list[str] = field(default_factory=list)


def create_subscription(store: Store, params: Params) -> Subscription:
    params.only(_CREATE)
    customer = store.customer(params.need_text("customer"), "customer")
    specs = [spec.only(("price", "quantity", "metadata")) for spec in params.items("items")]
    if not specs:
        raise missing_param("items")
    now = store.now()
    prices = [_price(store, spec) for spec in specs]
    currency, recurring = _common_terms(prices)
    anchor = params.whole("billing_cycle_anchor") or now
    first_end = anchor if anchor > now else boundary(anchor, recurring, 1)
    subscription = Subscription(
        id=new_id("sub"),
        created=now,
        customer=customer.id,
        currency=currency,
        period=Period(now, first_end),
        billing_cycle_anchor=anchor,
        next_boundary=1 if anchor > now else 2,
    )
    for spec, price in zip(specs, prices, strict=True):
        _add_item(store, subscription, spec, price)
    _set_fields(subscription, params)
    store.subscriptions[subscription.id] = subscription
    invoice = _bill_period(store, subscription, "subscription_create", subscription.period)
    _auto_finalize(store, invoice)
    store.emit("customer.subscription.created", subscription)
    return subscription


def update_subscription(store: Store, subscription_id: str, params: Params) -> Subscription:
    params.only(_EDITABLE)
    subscription = store.subscription(subscription_id)
    if subscription.status == "canceled" and params.tree.keys() - {"metadata", "expand"}:
        raise refused("A canceled subscription can only update its metadata.")
    before = snapshot(subscription)
    items_before = {i: snapshot(store.subscription_items[i]) for i in subscription.items}
    try:
        for spec in params.items("items"):
            _update_item(store, subscription, spec)
        if not subscription.items:
            raise invalid_param("items", "A subscription needs at least one item.")
        _common_terms([store.price(store.subscription_items[i].price) for i in subscription.items])
        _set_fields(subscription, params)
    except StripeError:  # leave the subscription as it was, like a failed Stripe request
        store.subscriptions[subscription.id] = before
        store.subscription_items.update(items_before)
        raise
    store.emit("customer.subscription.updated", subscription, before, items_before)
    return subscription


def cancel_subscription(store: Store, subscription_id: str) -> Subscription:
    subscription = store.subscription(subscription_id)
    if subscription.status == "canceled":
        raise refused(f"Subscription {subscription.id} is already canceled.")
    now = store.now()
    subscription.status, subscription.canceled_at, subscription.ended_at = "canceled", now, now
    store.emit("customer.subscription.deleted", subscription)
    return subscription


def list_subscriptions(store: Store, params: Params) -> list[Subscription]:
    params.only(("customer", "price", "status", "limit", "starting_after", "ending_before"))
    customer, price, status = params.text("customer"), params.text("price"), params.text("status")
    return [
        sub
        for sub in store.subscriptions.values()
        if (customer is None or sub.customer == customer)
        and _status_matches(status, sub.status)
        and (price is None or any(store.subscription_items[i].price == price for i in sub.items))
    ]


def advance(store: Store, seconds: int) -> Advanced:
    """Moves the clock forward and does what Stripe would have done meanwhile."""
    store.clock.offset += max(seconds, 0)
    result = Advanced(now=store.now())
    for subscription in list(store.subscriptions.values()):
        for _ in range(_MAX_RENEWALS):
            if subscription.status == "canceled" or subscription.period.end > result.now:
                break
            _renew(store, subscription, result)
    for invoice in list(store.invoices.values()):
        due = invoice.automatically_finalizes_at
        if invoice.status == "draft" and invoice.auto_advance and due and due <= result.now:
            _auto_finalize(store, invoice)
            result.invoices_finalized.append(invoice.id)
    return result


def _status_matches(wanted: str | None, status: str) -> bool:
    if wanted == "all":
        return True
    return status != "canceled" if wanted is None else status == wanted


def recurring_of(store: Store, subscription: Subscription) -> Recurring:
    recurring = store.price(store.subscription_items[subscription.items[0]].price).recurring
    assert recurring is not None  # only recurring prices are accepted on subscriptions
    return recurring


def _renew(store: Store, subscription: Subscription, result: Advanced) -> None:
    ended = subscription.period
    if subscription.cancel_at_period_end:
        subscription.status = "canceled"
        subscription.canceled_at, subscription.ended_at = ended.end, ended.end
        store.emit("customer.subscription.deleted", subscription)
        result.canceled.append(subscription.id)
        return
    before = snapshot(subscription)
    end = boundary(
        subscription.billing_cycle_anchor,
        recurring_of(store, subscription),
        subscription.next_boundary,
    )
    subscription.period = Period(ended.end, end)
    subscription.next_boundary += 1
    invoice = _bill_period(store, subscription, "subscription_cycle", ended)
    invoice.auto_advance = True
    invoice.automatically_finalizes_at = invoice.created + _FINALIZE_DELAY
    store.emit("customer.subscription.updated", subscription, before)
    result.renewed.append(subscription.id)
    result.invoices_created.append(invoice.id)


def _bill_period(store: Store, subscription: Subscription, reason: str, period: Period) -> Invoice:
    """Drafts an invoice: licensed prices for the current period plus pending items."""
    invoice = Invoice(
        id=new_id("in"),
        created=period.end if reason == "subscription_cycle" else subscription.created,
        customer=subscription.customer,
        currency=subscription.currency,
        subscription=subscription.id,
        billing_reason=reason,
        collection_method=subscription.collection_method,
        days_until_due=subscription.days_until_due,
        period=period,
    )
    store.invoices[invoice.id] = invoice
    for item_id in subscription.items:
        item = store.subscription_items[item_id]
        price = store.price(item.price)
        if price.recurring is None or price.recurring.usage_type != "licensed":
            continue
        unit = price.unit_amount_decimal or Decimal(0)
        product_name = store.product(price.product).name
        line = InvoiceLine(
            id=new_id("il"),
            invoice=invoice.id,
            subscription=subscription.id,
            subscription_item=item.id,
            price=price.id,
            amount=int((unit * item.quantity).quantize(Decimal(1), rounding=ROUND_HALF_UP)),
            quantity=item.quantity,
            period=subscription.period,
            description=f"{item.quantity} \N{MULTIPLICATION SIGN} {product_name}",
        )
        store.invoice_lines[line.id] = line
        invoice.lines.append(line.id)
    pull_pending_items(store, invoice)
    subscription.latest_invoice = invoice.id
    return invoice


def _auto_finalize(store: Store, invoice: Invoice) -> None:
    finalize(store, invoice)
    if invoice.status == "open" and invoice.collection_method == "charge_automatically":
        invoice.status, invoice.paid_at = "paid", invoice.finalized_at


def _price(store: Store, spec: Params) -> Price:
    return store.price(spec.need_text("price"), "items[price]")


def _common_terms(prices: list[Price]) -> tuple[str, Recurring]:
    first = prices[0]
    if first.recurring is None:
        raise invalid_param("items", f"Price {first.id} is not recurring.")
    for price in prices[1:]:
        if price.currency != first.currency:
            raise invalid_param("items", "All prices of a subscription need one currency.")
        if price.recurring is None or (
            (price.recurring.interval, price.recurring.interval_count)
            != (first.recurring.interval, first.recurring.interval_count)
        ):
            raise invalid_param("items", "All prices of a subscription need one interval.")
    return first.currency, first.recurring


def _add_item(store: Store, subscription: Subscription, spec: Params, price: Price) -> None:
    item = SubscriptionItem(
        id=new_id("si", 14),
        created=store.now(),
        subscription=subscription.id,
        price=price.id,
        quantity=spec.whole("quantity", 1) or 0,
        metadata=spec.metadata() or {},
    )
    store.subscription_items[item.id] = item
    subscription.items.append(item.id)


def _update_item(store: Store, subscription: Subscription, spec: Params) -> None:
    spec.only(("id", "price", "quantity", "metadata", "deleted", "clear_usage"))
    item_id = spec.text("id")
    if item_id is None:
        _add_item(store, subscription, spec, _price(store, spec))
        return
    if item_id not in subscription.items:
        raise invalid_param(
            "items[id]", f"No such subscription item on {subscription.id}: {item_id}"
        )
    item = store.subscription_items[item_id]
    if spec.flag("deleted", False):
        subscription.items.remove(item_id)
        return
    if spec.has("price"):
        item.price = _price(store, spec).id
    if spec.has("quantity"):
        item.quantity = spec.whole("quantity", 1) or 0
    metadata = spec.metadata(item.metadata)
    if metadata is not None:
        item.metadata = metadata


def _set_fields(subscription: Subscription, params: Params) -> None:
    if params.has("description"):
        subscription.description = params.text("description") or None
    if params.has("cancel_at_period_end"):
        subscription.cancel_at_period_end = bool(params.flag("cancel_at_period_end"))
    method = params.text("collection_method")
    if method is not None:
        if method not in ("charge_automatically", "send_invoice"):
            raise invalid_param("collection_method", f"Invalid collection_method: {method}")
        subscription.collection_method = method
    if params.has("days_until_due"):
        subscription.days_until_due = params.whole("days_until_due")
    metadata = params.metadata(subscription.metadata)
    if metadata is not None:
        subscription.metadata = metadata
