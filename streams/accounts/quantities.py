"""Seat counts from Stripe: a subscription item's `quantity` as a counter adjustment.

A plan with `stripeQuantityCounter` takes that counter from the quantity of the Stripe
subscription item mapped to it. Every subscription snapshot event (created, updated, …)
gives one adjustment per such item: the quantity, dated at the subscription's start for
`customer.subscription.created` and at the event's `created` otherwise, with the uid
`stripe:<event id>:<item id>`. A redelivered event is the same adjustment again (applied
once); an event that arrives late still dates its quantity at its own moment, so every
arrival order gives the same history. A deleted or canceled subscription gives none (its
account plan ends, and with it the counter's charges).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from streams.accounts.events import (
    SUBSCRIPTION_DELETED,
    SUBSCRIPTION_EVENTS,
    resolve_plan,
)
from streams.schemas.catalog import Catalog
from streams.schemas.counters import CounterAdjustment
from streams.schemas.stripe_events import Event, Subscription

CREATED = "customer.subscription.created"
_ENDED = frozenset({"canceled", "incomplete_expired"})


def quantity_adjustments(event: Mapping[str, Any], catalog: Catalog) -> list[CounterAdjustment]:
    """The counter adjustments a (valid) Stripe event implies; none for most events."""
    kind = event.get("type")
    if kind not in SUBSCRIPTION_EVENTS or kind == SUBSCRIPTION_DELETED:
        return []
    parsed = Event.model_validate(event)
    sub = Subscription.model_validate(parsed.data.object)
    if sub.status in _ENDED:
        return []
    at = parsed.created
    if kind == CREATED:
        at = next((v for v in (sub.start_date, sub.created) if v is not None), at)
    out = []
    for item in sub.items.data:
        plan = catalog.plans.get(resolve_plan(item.effective_price, catalog).plan_code or "")
        if plan is None or plan.stripeQuantityCounter is None or item.quantity is None:
            continue
        out.append(
            CounterAdjustment(
                uid=f"stripe:{parsed.id}:{item.id}",
                account=sub.customer_id,
                counter=plan.stripeQuantityCounter,
                date=datetime.fromtimestamp(at, tz=UTC),
                value=max(item.quantity, 0),
                receivedAt=parsed.created * 1000,
                source="stripe",
            )
        )
    return out
