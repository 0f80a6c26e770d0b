"""The simulator's moving parts wired together, independent of HTTP: state, events,
idempotency, faults, request stats and webhook delivery."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from connectors.stripe_sim import customers, render, subscriptions
from connectors.stripe_sim.config import SimConfig
from connectors.stripe_sim.faults import FaultInjector
from connectors.stripe_sim.forms import Params
from connectors.stripe_sim.idempotency import IdempotencyStore
from connectors.stripe_sim.records import CheckoutSession, Customer, Event, SubscriptionItem
from connectors.stripe_sim.stats import RequestStats
from connectors.stripe_sim.store import Record, Store, new_id
from connectors.stripe_sim.webhooks import Endpoint, WebhookDispatcher


class Simulator:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.store = self._new_store()
        self.idempotency = IdempotencyStore(config.idempotency_ttl_seconds, self.now)
        self.faults = FaultInjector(config.faults)
        self.stats = RequestStats()
        self._endpoint = None
        if config.webhook_url and config.webhook_secret:
            self._endpoint = Endpoint(config.webhook_url, config.webhook_secret)
        self.webhooks = WebhookDispatcher(
            self._endpoint,
            max_attempts=config.webhook_max_attempts,
            backoff_seconds=config.webhook_backoff_seconds,
        )
        # The request being handled, stamped on the events it causes.
        self.request_id: str | None = None
        self.idempotency_key: str | None = None

    def now(self) -> int:
        return self.store.now()

    def reset(self) -> None:
        """Forgets every object, stored key, counted request and delivery; the faults and
        the webhook endpoint go back to their start-up configuration."""
        self.store = self._new_store()
        self.idempotency.clear()
        self.stats.reset()
        self.faults = FaultInjector(self.config.faults)
        self.webhooks.deliveries.clear()
        self.webhooks.endpoint = self._endpoint

    def advance(self, seconds: int) -> dict[str, Any]:
        self.request_id, self.idempotency_key = None, None
        result = subscriptions.advance(self.store, seconds)
        return dict(vars(result))

    def checkout(self, body: dict[str, Any]) -> dict[str, Any]:
        """Does what a completed Stripe Checkout (mode=subscription) does."""
        self.request_id, self.idempotency_key = None, None
        store = self.store
        price = _checkout_price(store, body)
        quantity = str(body.get("quantity", 1))
        customer_id = body.get("customer")
        if customer_id is None:
            fields = {key: str(body[key]) for key in ("email", "name") if body.get(key)}
            customer_id = customers.create_customer(store, Params(fields)).id
        metadata = {str(k): str(v) for k, v in (body.get("subscription_metadata") or {}).items()}
        terms: dict[str, Any] = {
            "customer": str(customer_id),
            "items": [{"price": price, "quantity": quantity}],
            "metadata": metadata,
        }
        if body.get("billing_cycle_anchor") is not None:  # Checkout's subscription_data
            terms["billing_cycle_anchor"] = str(body["billing_cycle_anchor"])
        subscription = subscriptions.create_subscription(store, Params(terms))
        owner = store.customer(subscription.customer)
        first_invoice = store.invoices[subscription.latest_invoice or ""]
        session = CheckoutSession(
            id=new_id("cs_test", 58),
            created=store.now(),
            customer=owner.id,
            subscription=subscription.id,
            currency=subscription.currency,
            amount_total=render.invoice(store, first_invoice, render.Shape.BASIL)["total"],
            email=owner.email,
            name=owner.name,
            client_reference_id=body.get("client_reference_id"),
            metadata={str(k): str(v) for k, v in (body.get("metadata") or {}).items()},
        )
        store.checkout_sessions[session.id] = session
        self.changed("checkout.session.completed", session, None, {})
        return render.checkout_session(session)

    def state(self) -> dict[str, Any]:
        store, shape = self.store, render.Shape.BASIL

        def dump(table: dict[str, Any]) -> list[dict[str, Any]]:
            return [render.render(store, record, shape) for record in table.values()]

        return {
            "now": store.now(),
            "customers": dump(store.customers),
            "products": dump(store.products),
            "prices": dump(store.prices),
            "subscriptions": dump(store.subscriptions),
            "invoices": dump(store.invoices),
            "invoiceitems": dump(store.invoice_items),
            "checkout_sessions": dump(store.checkout_sessions),
            "events": [render.event(event, 0) for event in store.events.values()],
            "idempotency_keys": len(self.idempotency),
        }

    def changed(
        self,
        event_type: str,
        after: Record,
        before: Record | None,
        items_before: Mapping[str, SubscriptionItem],
    ) -> None:
        """Records the event (snapshotting the object now) and hands it to delivery."""
        shape = render.shape_of(self.config.webhook_api_version)
        if isinstance(after, Customer) and after.deleted:  # the event carries the full object
            after = dataclasses.replace(after, deleted=False)
        current = render.render(self.store, after, shape)
        previous = None
        if before is not None:
            then = self.store
            if items_before:
                merged = {**self.store.subscription_items, **items_before}
                then = dataclasses.replace(self.store, subscription_items=merged)
            old = render.render(then, before, shape)
            previous = {key: old.get(key) for key in current if old.get(key) != current[key]}
        event = Event(
            id=new_id("evt"),
            created=self.store.now(),
            type=event_type,
            api_version=self.config.webhook_api_version,
            object=current,
            previous_attributes=previous,
            request_id=self.request_id,
            idempotency_key=self.idempotency_key,
        )
        self.store.events[event.id] = event
        pending = 1 if self.webhooks.endpoint is not None else 0
        self.webhooks.dispatch(event.id, event.type, orjson.dumps(render.event(event, pending)))

    def _new_store(self) -> Store:
        store = Store()
        store.listener = self.changed
        return store


def _checkout_price(store: Store, body: dict[str, Any]) -> str:
    wanted = str(body.get("price") or "")
    if wanted in store.prices:
        return wanted
    for price in store.prices.values():
        if price.lookup_key == wanted:
            return price.id
    raise ValueError(f"no price with id or lookup_key {wanted!r}")
