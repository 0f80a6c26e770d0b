"""Lenient models of the parts of Stripe webhook payloads that meterline reads.

Stripe adds fields without notice, so every model keeps unknown fields (`extra="allow"`)
and only the fields we use are declared. Both API shapes are accepted: up to
2025-02-24.acacia the billing period (and `plan`) sits on the subscription; from
2025-03-31.basil the period sits on each `items.data[]` entry.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator


class Lenient(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")


def _none_to_empty(value: Any) -> Any:
    return {} if value is None else value


# Stripe metadata: string values; a few objects send null instead of {}.
Metadata = Annotated[dict[str, str], BeforeValidator(_none_to_empty)]


class Ref(Lenient):
    """An expanded object of which we only need the id (a customer, a subscription)."""

    id: str


class Product(Lenient):
    id: str
    metadata: Metadata = Field(default_factory=dict)


class Price(Lenient):
    """A Price, or the legacy Plan object (`items.data[].plan`), which has the same ids."""

    id: str
    lookup_key: str | None = None
    product: str | Product | None = None
    metadata: Metadata = Field(default_factory=dict)

    @property
    def product_id(self) -> str | None:
        return self.product.id if isinstance(self.product, Product) else self.product


class SubscriptionItem(Lenient):
    id: str
    created: int | None = None
    price: Price | None = None
    plan: Price | None = None
    quantity: int | None = None  # null for metered prices
    # 2025-03-31.basil and later
    current_period_start: int | None = None
    current_period_end: int | None = None

    @field_validator("price", "plan", mode="before")
    @classmethod
    def _unexpanded(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value

    @property
    def effective_price(self) -> Price | None:
        return self.price or self.plan


class ItemList(Lenient):
    data: list[SubscriptionItem] = Field(default_factory=list)


class Subscription(Lenient):
    id: str
    customer: str | Ref
    status: str
    created: int | None = None
    currency: str | None = None
    start_date: int | None = None
    cancel_at: int | None = None
    canceled_at: int | None = None
    ended_at: int | None = None
    items: ItemList = Field(default_factory=ItemList)
    # up to 2025-02-24.acacia
    current_period_start: int | None = None
    current_period_end: int | None = None

    @property
    def customer_id(self) -> str:
        return self.customer.id if isinstance(self.customer, Ref) else self.customer


class Customer(Lenient):
    id: str
    name: str | None = None
    email: str | None = None
    currency: str | None = None
    created: int | None = None
    deleted: bool = False
    metadata: Metadata = Field(default_factory=dict)


class CustomerDetails(Lenient):
    email: str | None = None
    name: str | None = None


class CheckoutSession(Lenient):
    id: str
    mode: str | None = None
    customer: str | Ref | None = None
    subscription: str | Ref | None = None
    client_reference_id: str | None = None
    currency: str | None = None
    customer_details: CustomerDetails | None = None
    metadata: Metadata = Field(default_factory=dict)

    @property
    def customer_id(self) -> str | None:
        return self.customer.id if isinstance(self.customer, Ref) else self.customer

    @property
    def subscription_id(self) -> str | None:
        return self.subscription.id if isinstance(self.subscription, Ref) else self.subscription


class EventData(Lenient):
    object: dict[str, Any]
    previous_attributes: dict[str, Any] | None = None


class Event(Lenient):
    id: str
    type: str
    created: int
    api_version: str | None = None
    data: EventData
