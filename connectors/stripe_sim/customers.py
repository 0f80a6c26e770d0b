"""Customers: create, update, delete (which cancels their subscriptions)."""

from __future__ import annotations

from connectors.stripe_sim.forms import Params
from connectors.stripe_sim.records import Customer
from connectors.stripe_sim.store import Store, new_id, snapshot
from connectors.stripe_sim.subscriptions import cancel_subscription

_FIELDS = ("email", "name", "description", "phone")
_ACCEPTED = (
    *_FIELDS,
    "metadata",
    "address",
    "invoice_settings",
    "payment_method",
    "preferred_locales",
    "shipping",
    "tax_exempt",
)


def create_customer(store: Store, params: Params) -> Customer:
    params.only(_ACCEPTED)
    customer = Customer(id=new_id("cus", 14), created=store.now())
    _apply(customer, params)
    store.customers[customer.id] = customer
    store.emit("customer.created", customer)
    return customer


def update_customer(store: Store, customer_id: str, params: Params) -> Customer:
    params.only(_ACCEPTED)
    customer = store.customer(customer_id)
    before = snapshot(customer)
    _apply(customer, params)
    store.emit("customer.updated", customer, before)
    return customer


def delete_customer(store: Store, customer_id: str) -> Customer:
    customer = store.customer(customer_id)
    for subscription in list(store.subscriptions.values()):
        if subscription.customer == customer.id and subscription.status != "canceled":
            cancel_subscription(store, subscription.id)
    customer.deleted = True
    store.emit("customer.deleted", customer)
    return customer


def list_customers(store: Store, params: Params) -> list[Customer]:
    params.only(("email", "limit", "starting_after", "ending_before", "created"))
    email = params.text("email")
    return [
        customer
        for customer in store.customers.values()
        if not customer.deleted and (email is None or customer.email == email)
    ]


def _apply(customer: Customer, params: Params) -> None:
    for name in _FIELDS:
        if params.has(name):
            setattr(customer, name, params.text(name) or None)
    metadata = params.metadata(customer.metadata)
    if metadata is not None:
        customer.metadata = metadata
