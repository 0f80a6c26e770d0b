"""The simulator's stored objects: plain records, rendered to Stripe JSON by `render`."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class Period:
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Recurring:
    interval: str  # day | week | month | year
    interval_count: int = 1
    usage_type: str = "licensed"  # licensed | metered (metered bills nothing in advance)


@dataclass(slots=True)
class Customer:
    id: str
    created: int
    email: str | None = None
    name: str | None = None
    description: str | None = None
    phone: str | None = None
    currency: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    deleted: bool = False


@dataclass(slots=True)
class Product:
    id: str
    created: int
    name: str
    active: bool = True
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Price:
    id: str
    created: int
    product: str
    currency: str
    unit_amount_decimal: Decimal | None
    recurring: Recurring | None = None
    lookup_key: str | None = None
    nickname: str | None = None
    active: bool = True
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def unit_amount(self) -> int | None:
        value = self.unit_amount_decimal
        return int(value) if value is not None and value == value.to_integral_value() else None


@dataclass(slots=True)
class SubscriptionItem:
    id: str
    created: int
    subscription: str
    price: str
    quantity: int = 1
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Subscription:
    id: str
    created: int
    customer: str
    currency: str
    period: Period
    billing_cycle_anchor: int
    items: list[str] = field(default_factory=list)
    next_boundary: int = 1  # index of the next period end, counted from the anchor
    status: str = "active"
    collection_method: str = "charge_automatically"
    days_until_due: int | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    cancel_at_period_end: bool = False
    canceled_at: int | None = None
    ended_at: int | None = None
    latest_invoice: str | None = None


@dataclass(slots=True)
class InvoiceItem:
    id: str
    created: int
    customer: str
    currency: str
    amount: int
    quantity: int
    unit_amount_decimal: Decimal
    period: Period
    description: str | None = None
    invoice: str | None = None
    subscription: str | None = None
    price: str | None = None
    discountable: bool = True
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class InvoiceLine:
    """A line of an invoice: either an invoice item (rendered live) or a subscription charge."""

    id: str
    invoice: str
    invoice_item: str | None = None
    subscription: str | None = None
    subscription_item: str | None = None
    price: str | None = None
    amount: int = 0
    quantity: int = 1
    period: Period = Period(0, 0)
    description: str | None = None


@dataclass(slots=True)
class Invoice:
    id: str
    created: int
    customer: str
    currency: str
    subscription: str | None = None
    status: str = "draft"
    billing_reason: str = "manual"
    auto_advance: bool = False
    automatically_finalizes_at: int | None = None
    collection_method: str = "charge_automatically"
    days_until_due: int | None = None
    due_date: int | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    period: Period = Period(0, 0)
    lines: list[str] = field(default_factory=list)
    number: str | None = None
    finalized_at: int | None = None
    paid_at: int | None = None
    voided_at: int | None = None


@dataclass(slots=True)
class CheckoutSession:
    id: str
    created: int
    customer: str
    subscription: str
    currency: str
    amount_total: int
    email: str | None = None
    name: str | None = None
    client_reference_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Event:
    id: str
    created: int
    type: str
    api_version: str
    object: dict[str, Any]
    previous_attributes: dict[str, Any] | None = None
    request_id: str | None = None
    idempotency_key: str | None = None
