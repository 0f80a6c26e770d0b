"""Stripe JSON shapes of the stored records, per API version.

Up to 2025-02-24.acacia a subscription carries `current_period_start/end` and items carry
`plan`; from 2025-03-31.basil the periods live on `items.data[]`, and invoices, invoice
items and lines link to their subscription through `parent`, to their price through
`pricing.price_details`.
"""

from __future__ import annotations

from decimal import Decimal
from enum import Enum
from typing import Any

from connectors.stripe_sim.invoicing import invoice_total, line_amount
from connectors.stripe_sim.records import (
    CheckoutSession,
    Customer,
    Event,
    Invoice,
    InvoiceItem,
    InvoiceLine,
    Period,
    Price,
    Product,
    Subscription,
    SubscriptionItem,
)
from connectors.stripe_sim.store import Record, Store

Json = dict[str, Any]
EMBEDDED_LINES = 10  # Stripe embeds the first lines and pages the rest at `lines.url`


class Shape(Enum):
    ACACIA = "acacia"
    BASIL = "basil"


def shape_of(api_version: str) -> Shape:
    return Shape.ACACIA if api_version[:10] <= "2025-02-24" else Shape.BASIL


def decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def list_object(data: list[Json], url: str, has_more: bool = False) -> Json:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def deleted(object_id: str, kind: str) -> Json:
    return {"id": object_id, "object": kind, "deleted": True}


def render(store: Store, record: Record, shape: Shape) -> Json:
    match record:
        case Customer():
            return customer(record)
        case Product():
            return product(record)
        case Price():
            return price(record)
        case Subscription():
            return subscription(store, record, shape)
        case SubscriptionItem():
            sub = store.subscriptions[record.subscription]
            return subscription_item(store, record, sub.period, shape)
        case Invoice():
            return invoice(store, record, shape)
        case InvoiceLine():
            return invoice_line(store, record, shape)
        case InvoiceItem():
            return invoice_item(store, record, shape)
        case CheckoutSession():
            return checkout_session(record)


def _base(object_id: str, kind: str, created: int) -> Json:
    return {"id": object_id, "object": kind, "created": created, "livemode": False}


def customer(record: Customer) -> Json:
    if record.deleted:
        return deleted(record.id, "customer")
    return _base(record.id, "customer", record.created) | {
        "address": None,
        "balance": 0,
        "currency": record.currency,
        "default_source": None,
        "delinquent": False,
        "description": record.description,
        "discount": None,
        "email": record.email,
        "invoice_prefix": record.id[4:12].upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "metadata": dict(record.metadata),
        "name": record.name,
        "phone": record.phone,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def product(record: Product) -> Json:
    return _base(record.id, "product", record.created) | {
        "active": record.active,
        "default_price": None,
        "description": record.description,
        "images": [],
        "marketing_features": [],
        "metadata": dict(record.metadata),
        "name": record.name,
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "unit_label": None,
        "updated": record.created,
        "url": None,
    }


def price(record: Price) -> Json:
    recurring = record.recurring
    unit = record.unit_amount_decimal
    return _base(record.id, "price", record.created) | {
        "active": record.active,
        "billing_scheme": "per_unit",
        "currency": record.currency,
        "custom_unit_amount": None,
        "lookup_key": record.lookup_key,
        "metadata": dict(record.metadata),
        "nickname": record.nickname,
        "product": record.product,
        "recurring": None
        if recurring is None
        else {
            "interval": recurring.interval,
            "interval_count": recurring.interval_count,
            "meter": None,
            "trial_period_days": None,
            "usage_type": recurring.usage_type,
        },
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "one_time" if recurring is None else "recurring",
        "unit_amount": record.unit_amount,
        "unit_amount_decimal": None if unit is None else decimal_text(unit),
    }


def plan(record: Price) -> Json:
    """The legacy `plan` view of a recurring price (acacia and earlier)."""
    recurring = record.recurring
    return _base(record.id, "plan", record.created) | {
        "active": record.active,
        "amount": record.unit_amount,
        "amount_decimal": None
        if record.unit_amount_decimal is None
        else decimal_text(record.unit_amount_decimal),
        "billing_scheme": "per_unit",
        "currency": record.currency,
        "interval": recurring.interval if recurring else None,
        "interval_count": recurring.interval_count if recurring else None,
        "metadata": dict(record.metadata),
        "nickname": record.nickname,
        "product": record.product,
        "usage_type": recurring.usage_type if recurring else None,
    }


def subscription_item(store: Store, record: SubscriptionItem, period: Period, shape: Shape) -> Json:
    item_price = store.prices[record.price]
    body = {
        "id": record.id,
        "object": "subscription_item",
        "created": record.created,
        "discounts": [],
        "metadata": dict(record.metadata),
        "price": price(item_price),
        "quantity": record.quantity,
        "subscription": record.subscription,
        "tax_rates": [],
    }
    if shape is Shape.BASIL:
        body["current_period_start"] = period.start
        body["current_period_end"] = period.end
    else:
        body["plan"] = plan(item_price)
    return body


def subscription(store: Store, record: Subscription, shape: Shape) -> Json:
    items = [
        subscription_item(store, store.subscription_items[item_id], record.period, shape)
        for item_id in record.items
    ]
    body = _base(record.id, "subscription", record.created) | {
        "application": None,
        "billing_cycle_anchor": record.billing_cycle_anchor,
        "cancel_at": None,
        "cancel_at_period_end": record.cancel_at_period_end,
        "canceled_at": record.canceled_at,
        "collection_method": record.collection_method,
        "currency": record.currency,
        "customer": record.customer,
        "days_until_due": record.days_until_due,
        "default_payment_method": None,
        "description": record.description,
        "ended_at": record.ended_at,
        "items": list_object(items, f"/v1/subscription_items?subscription={record.id}"),
        "latest_invoice": record.latest_invoice,
        "metadata": dict(record.metadata),
        "start_date": record.created,
        "status": record.status,
        "test_clock": None,
        "trial_end": None,
        "trial_start": None,
    }
    if shape is Shape.ACACIA:
        body["current_period_start"] = record.period.start
        body["current_period_end"] = record.period.end
        body["plan"] = items[0]["plan"] if len(items) == 1 else None
        body["quantity"] = items[0]["quantity"] if len(items) == 1 else None
    return body


def _price_details(store: Store, price_id: str | None) -> Json | None:
    if price_id is None:
        return None
    return {"price": price_id, "product": store.prices[price_id].product}


def invoice_item(store: Store, record: InvoiceItem, shape: Shape) -> Json:
    body = _base(record.id, "invoiceitem", record.created) | {
        "amount": record.amount,
        "currency": record.currency,
        "customer": record.customer,
        "date": record.created,
        "description": record.description,
        "discountable": record.discountable,
        "discounts": [],
        "invoice": record.invoice,
        "metadata": dict(record.metadata),
        "period": {"start": record.period.start, "end": record.period.end},
        "proration": False,
        "quantity": record.quantity,
        "tax_rates": [],
        "test_clock": None,
    }
    body.pop("created")  # invoice items carry `date`, not `created`
    unit = decimal_text(record.unit_amount_decimal)
    if shape is Shape.BASIL:
        body["net_amount"] = record.amount
        body["parent"] = (
            None
            if record.subscription is None
            else {
                "subscription_details": {
                    "subscription": record.subscription,
                    "subscription_item": None,
                },
                "type": "subscription_details",
            }
        )
        body["pricing"] = {
            "price_details": _price_details(store, record.price),
            "type": "price_details",
            "unit_amount_decimal": unit,
        }
    else:
        body["price"] = None if record.price is None else price(store.prices[record.price])
        body["subscription"] = record.subscription
        body["subscription_item"] = None
        body["unit_amount"] = (
            int(record.unit_amount_decimal)
            if (record.unit_amount_decimal == record.unit_amount_decimal.to_integral_value())
            else None
        )
        body["unit_amount_decimal"] = unit
    return body


def invoice_line(store: Store, record: InvoiceLine, shape: Shape) -> Json:
    item = store.invoice_items.get(record.invoice_item or "")
    price_id = item.price if item else record.price
    period = item.period if item else record.period
    subscription_id = item.subscription if item else record.subscription
    body = {
        "id": record.id,
        "object": "line_item",
        "amount": line_amount(store, record),
        "currency": store.invoices[record.invoice].currency,
        "description": item.description if item else record.description,
        "discountable": item.discountable if item else True,
        "discounts": [],
        "invoice": record.invoice,
        "livemode": False,
        "metadata": dict(item.metadata) if item else {},
        "period": {"start": period.start, "end": period.end},
        "quantity": item.quantity if item else record.quantity,
    }
    if shape is Shape.BASIL:
        details = {
            "invoice_item": record.invoice_item,
            "proration": False,
            "subscription": subscription_id,
        }
        if item is None:
            details["subscription_item"] = record.subscription_item
        kind = "invoice_item_details" if item else "subscription_item_details"
        body["parent"] = {kind: details, "type": kind}
        body["pricing"] = {
            "price_details": _price_details(store, price_id),
            "type": "price_details",
            "unit_amount_decimal": decimal_text(item.unit_amount_decimal) if item else None,
        }
    else:
        body["invoice_item"] = record.invoice_item
        body["price"] = None if price_id is None else price(store.prices[price_id])
        body["proration"] = False
        body["subscription"] = subscription_id
        body["subscription_item"] = record.subscription_item
        body["type"] = "invoiceitem" if item else "subscription"
    return body


def invoice_lines(store: Store, shape: Shape, lines: list[str]) -> list[Json]:
    return [invoice_line(store, store.invoice_lines[line_id], shape) for line_id in lines]


def invoice(store: Store, record: Invoice, shape: Shape) -> Json:
    total = invoice_total(store, record)
    paid = total if record.status == "paid" else 0
    owner = store.customers.get(record.customer)
    sub = store.subscriptions.get(record.subscription or "")
    lines = invoice_lines(store, shape, record.lines[:EMBEDDED_LINES])
    body = _base(record.id, "invoice", record.created) | {
        "account_country": "US",
        "amount_due": total,
        "amount_paid": paid,
        "amount_remaining": 0 if record.status in ("paid", "void") else total - paid,
        "attempt_count": 0,
        "attempted": record.status == "paid",
        "auto_advance": record.auto_advance,
        "automatically_finalizes_at": record.automatically_finalizes_at,
        "billing_reason": record.billing_reason,
        "collection_method": record.collection_method,
        "currency": record.currency,
        "customer": record.customer,
        "customer_email": owner.email if owner else None,
        "customer_name": owner.name if owner else None,
        "description": record.description,
        "due_date": record.due_date,
        "effective_at": record.finalized_at,
        "ending_balance": None if record.status == "draft" else 0,
        "footer": None,
        "hosted_invoice_url": None,
        "lines": list_object(
            lines, f"/v1/invoices/{record.id}/lines", len(record.lines) > EMBEDDED_LINES
        ),
        "metadata": dict(record.metadata),
        "next_payment_attempt": None,
        "number": record.number,
        "period_end": record.period.end,
        "period_start": record.period.start,
        "starting_balance": 0,
        "status": record.status,
        "status_transitions": {
            "finalized_at": record.finalized_at,
            "marked_uncollectible_at": None,
            "paid_at": record.paid_at,
            "voided_at": record.voided_at,
        },
        "subtotal": total,
        "subtotal_excluding_tax": total,
        "test_clock": None,
        "total": total,
        "total_excluding_tax": total,
    }
    sub_metadata = dict(sub.metadata) if sub else None
    if shape is Shape.BASIL:
        body["parent"] = (
            None
            if record.subscription is None
            else {
                "quote_details": None,
                "subscription_details": {
                    "metadata": sub_metadata,
                    "subscription": record.subscription,
                },
                "type": "subscription_details",
            }
        )
    else:
        body["paid"] = record.status == "paid"
        body["subscription"] = record.subscription
        body["subscription_details"] = {"metadata": sub_metadata}
    return body


def checkout_session(record: CheckoutSession) -> Json:
    return _base(record.id, "checkout.session", record.created) | {
        "amount_subtotal": record.amount_total,
        "amount_total": record.amount_total,
        "client_reference_id": record.client_reference_id,
        "currency": record.currency,
        "customer": record.customer,
        "customer_details": {"email": record.email, "name": record.name},
        "metadata": dict(record.metadata),
        "mode": "subscription",
        "payment_status": "paid",
        "status": "complete",
        "subscription": record.subscription,
    }


def event(record: Event, pending_webhooks: int) -> Json:
    data: Json = {"object": record.object}
    if record.previous_attributes is not None:
        data["previous_attributes"] = record.previous_attributes
    return _base(record.id, "event", record.created) | {
        "api_version": record.api_version,
        "data": data,
        "pending_webhooks": pending_webhooks,
        "request": {"id": record.request_id, "idempotency_key": record.idempotency_key},
        "type": record.type,
    }
