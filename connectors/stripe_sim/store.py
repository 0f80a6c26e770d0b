"""In-memory state of one simulated Stripe account, its clock and its event hook."""

from __future__ import annotations

import copy
import random
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from connectors.stripe_sim.errors import no_such
from connectors.stripe_sim.records import (
    CheckoutSession,
    Customer,
    Event,
    Invoice,
    InvoiceItem,
    InvoiceLine,
    Price,
    Product,
    Subscription,
    SubscriptionItem,
)

Record = (
    Customer
    | Product
    | Price
    | Subscription
    | SubscriptionItem
    | Invoice
    | InvoiceLine
    | InvoiceItem
    | CheckoutSession
)
R = TypeVar("R", bound=Record)
Listener = Callable[[str, Record, Record | None, Mapping[str, SubscriptionItem]], None]
"""Called on every notable change with (event type, object after, object before or None,
subscription items as they were before, where they changed)."""

_ALPHABET = string.ascii_letters + string.digits


_random = random.Random()  # ids need to be unique, not unguessable


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "_" + "".join(_random.choices(_ALPHABET, k=length))


@dataclass
class Clock:
    """Wall clock plus an offset that `/_sim/advance` moves forward (a test clock)."""

    offset: int = 0

    def now(self) -> int:
        return int(time.time()) + self.offset


@dataclass
class Store:
    clock: Clock = field(default_factory=Clock)
    customers: dict[str, Customer] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    prices: dict[str, Price] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    subscription_items: dict[str, SubscriptionItem] = field(default_factory=dict)
    invoices: dict[str, Invoice] = field(default_factory=dict)
    invoice_lines: dict[str, InvoiceLine] = field(default_factory=dict)
    invoice_items: dict[str, InvoiceItem] = field(default_factory=dict)
    checkout_sessions: dict[str, CheckoutSession] = field(default_factory=dict)
    events: dict[str, Event] = field(default_factory=dict)
    invoice_sequence: int = 0
    listener: Listener | None = None

    def now(self) -> int:
        return self.clock.now()

    def emit(
        self,
        event_type: str,
        after: Record,
        before: Record | None = None,
        items_before: Mapping[str, SubscriptionItem] | None = None,
    ) -> None:
        if self.listener is not None:
            self.listener(event_type, after, before, items_before or {})

    def customer(self, customer_id: str, param: str = "id") -> Customer:
        found = self.customers.get(customer_id)
        if found is None or found.deleted:
            raise no_such("customer", customer_id, param)
        return found

    def product(self, product_id: str, param: str = "id") -> Product:
        return _get(self.products, "product", product_id, param)

    def price(self, price_id: str, param: str = "id") -> Price:
        return _get(self.prices, "price", price_id, param)

    def subscription(self, subscription_id: str, param: str = "id") -> Subscription:
        return _get(self.subscriptions, "subscription", subscription_id, param)

    def invoice(self, invoice_id: str, param: str = "id") -> Invoice:
        return _get(self.invoices, "invoice", invoice_id, param)

    def invoice_item(self, item_id: str, param: str = "id") -> InvoiceItem:
        return _get(self.invoice_items, "invoiceitem", item_id, param)

    def event(self, event_id: str) -> Event:
        found = self.events.get(event_id)
        if found is None:
            raise no_such("event", event_id)
        return found


def _get(table: dict[str, R], kind: str, object_id: str, param: str) -> R:
    found = table.get(object_id)
    if found is None:
        raise no_such(kind, object_id, param)
    return found


def snapshot(record: R) -> R:
    """A deep copy taken before a change, for an event's previous_attributes."""
    return copy.deepcopy(record)
