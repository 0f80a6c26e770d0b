"""Factories for Stripe webhook event payloads, in both API shapes.

Up to 2025-02-24.acacia a subscription carries `current_period_start/end` (and `plan`,
mirrored on each item); from 2025-03-31.basil the periods sit on `items.data[]`.
Payloads carry the fields Stripe sends beside the ones meterline reads, so the lenient
models are exercised on realistic input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

ACACIA = "2025-02-24.acacia"
BASIL = "2025-03-31.basil"
API_VERSIONS = (ACACIA, BASIL)

T0 = 1_740_000_000  # 2025-02-19T21:20:00Z
DAY = 86_400
MONTH = 30 * DAY

Payload = dict[str, Any]


def event(
    type: str,
    obj: Payload,
    *,
    created: int,
    api: str = BASIL,
    id: str | None = None,
    previous_attributes: Mapping[str, Any] | None = None,
) -> Payload:
    data: Payload = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = dict(previous_attributes)
    return {
        "id": id or f"evt_{created}_{type.replace('.', '_')}",
        "object": "event",
        "api_version": api,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type,
    }


def customer(
    id: str = "cus_1",
    *,
    name: str | None = "Acme Ltd",
    email: str | None = "billing@acme.test",
    currency: str | None = None,
    metadata: Mapping[str, str] | None = None,
    created: int = T0,
) -> Payload:
    return {
        "id": id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": created,
        "currency": currency,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "email": email,
        "invoice_prefix": "A1B2C3D4",
        "invoice_settings": {"custom_fields": None, "default_payment_method": None},
        "livemode": False,
        "metadata": dict(metadata or {}),
        "name": name,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def product(id: str = "prod_basic", *, metadata: Mapping[str, str] | None = None) -> Payload:
    return {
        "id": id,
        "object": "product",
        "active": True,
        "created": T0 - DAY,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "name": id.removeprefix("prod_").title(),
        "type": "service",
    }


def price(
    id: str = "price_basic",
    *,
    lookup_key: str | None = None,
    product: str | Payload = "prod_basic",
    metadata: Mapping[str, str] | None = None,
) -> Payload:
    return {
        "id": id,
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": T0 - DAY,
        "currency": "usd",
        "livemode": False,
        "lookup_key": lookup_key,
        "metadata": dict(metadata or {}),
        "nickname": None,
        "product": product,
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        "tax_behavior": "unspecified",
        "type": "recurring",
        "unit_amount": 1000,
        "unit_amount_decimal": "1000",
    }


def legacy_plan(of_price: Payload) -> Payload:
    """The `plan` view Stripe keeps of a recurring price (same id, product, metadata)."""
    return {
        "id": of_price["id"],
        "object": "plan",
        "active": True,
        "amount": of_price["unit_amount"],
        "currency": of_price["currency"],
        "interval": "month",
        "interval_count": 1,
        "metadata": of_price["metadata"],
        "product": of_price["product"],
        "usage_type": "licensed",
    }


class Item(NamedTuple):
    id: str
    price: Payload
    created: int | None = None  # None: created with the subscription


def subscription(
    id: str = "sub_1",
    *,
    api: str,
    customer: str | Payload = "cus_1",
    items: Sequence[Item] | None = None,
    status: str = "active",
    created: int = T0,
    start_date: int | None = None,
    period: tuple[int, int] = (T0, T0 + MONTH),
    cancel_at: int | None = None,
    canceled_at: int | None = None,
    ended_at: int | None = None,
) -> Payload:
    items = items if items is not None else [Item("si_1", price())]
    sub: Payload = {
        "id": id,
        "object": "subscription",
        "billing_cycle_anchor": period[0],
        "cancel_at": cancel_at,
        "cancel_at_period_end": cancel_at is not None and cancel_at == period[1],
        "canceled_at": canceled_at,
        "collection_method": "charge_automatically",
        "created": created,
        "currency": "usd",
        "customer": customer,
        "ended_at": ended_at,
        "items": {
            "object": "list",
            "data": [_item(entry, id, api=api, created=created, period=period) for entry in items],
            "has_more": False,
            "total_count": len(items),
            "url": f"/v1/subscription_items?subscription={id}",
        },
        "latest_invoice": "in_1",
        "livemode": False,
        "metadata": {},
        "start_date": start_date if start_date is not None else created,
        "status": status,
        "trial_end": None,
        "trial_start": None,
    }
    if api == ACACIA:
        sub["current_period_start"], sub["current_period_end"] = period
        if len(items) == 1:
            sub["plan"] = legacy_plan(items[0].price)
            sub["quantity"] = 1
    return sub


def _item(
    entry: Item, subscription_id: str, *, api: str, created: int, period: tuple[int, int]
) -> Payload:
    item: Payload = {
        "id": entry.id,
        "object": "subscription_item",
        "created": entry.created if entry.created is not None else created,
        "discounts": [],
        "metadata": {},
        "price": entry.price,
        "quantity": 1,
        "subscription": subscription_id,
        "tax_rates": [],
    }
    if api == ACACIA:
        item["plan"] = legacy_plan(entry.price)
    else:
        item["current_period_start"], item["current_period_end"] = period
    return item


def checkout_session(
    id: str = "cs_test_1",
    *,
    customer: str | Payload | None = "cus_1",
    subscription: str | None = "sub_1",
    mode: str = "subscription",
    client_reference_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    created: int = T0,
) -> Payload:
    return {
        "id": id,
        "object": "checkout.session",
        "amount_subtotal": 1000,
        "amount_total": 1000,
        "client_reference_id": client_reference_id,
        "created": created,
        "currency": "usd",
        "customer": customer,
        "customer_creation": "always",
        "customer_details": {
            "address": None,
            "email": "billing@acme.test",
            "name": "Acme Ltd",
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "expires_at": created + DAY,
        "invoice": "in_1" if mode == "subscription" else None,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "mode": mode,
        "payment_intent": None if mode == "subscription" else "pi_1",
        "payment_status": "paid",
        "status": "complete",
        "subscription": subscription,
        "success_url": "https://acme.test/welcome",
    }
