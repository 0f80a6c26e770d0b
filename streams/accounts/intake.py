"""One `stripe.events` message, handled: decode, check, apply to the account state,
dead-letter what cannot be applied.

For each event, one at a time (concurrency 1, so no offset is committed past it):
  1. decode the raw bytes; the message key must be the event's customer (co-partitioning)
  2. read the account and its plans, call `apply_event` with the live catalog
  3. write back every upserted plan, then the account
  4. publish to `stripe.events.rejected`: the event itself when it is invalid or anything
     failed (reason + `stripe.events[p]@o`), and one record per unmapped price
  5. publish the seat counts the event carries to `counter.adjustments`
     (`streams.accounts.quantities`; stale events too: they date their own quantity)
  6. wait until Kafka acknowledged 3 to 5 (`confirm`), then the agent lets faust ack.

Unmapped prices. A subscription item whose price maps to no plan is stored as an
UNMAPPED account plan and reported (log, counter, a record on `stripe.events.rejected`
with reason "unmapped price …"). Once the mapping is in the catalog, the next event of
that subscription maps it, keeping the plan's id and start date (renewals, updates; an
operator can trigger one at once by changing the subscription in Stripe, e.g. its
metadata). Replaying `stripe.events` (resetting this app's consumer group offsets) does
not: every replayed event is a duplicate or stale against the stored state, by design.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

import faust
import orjson

from streams.accounts.events import InvalidStripeEvent, UnmappedPrice, apply_event
from streams.accounts.events import customer_key as event_customer
from streams.accounts.quantities import quantity_adjustments
from streams.accounts.state import AccountState
from streams.catalog.live import LiveCatalog
from streams.delivery import deliver
from streams.schemas.accounts import AccountPlan
from streams.schemas.catalog import Catalog
from streams.schemas.counters import CounterAdjustment
from streams.sources import source_of

log = logging.getLogger(__name__)


def decode_event(raw: bytes | None) -> dict[str, Any]:
    """The Stripe event in a `stripe.events` message; InvalidStripeEvent otherwise."""
    if not raw:
        raise InvalidStripeEvent("the message has no value")
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidStripeEvent(f"the message is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise InvalidStripeEvent("the message is not a JSON object")
    return event


def check_key(key: bytes | None, event: dict[str, Any]) -> str | None:
    """The event's customer; InvalidStripeEvent when the message is keyed by another one
    (its state would live on another partition)."""
    customer = event_customer(event)
    if customer is not None and key is not None and key.decode("utf-8", "replace") != customer:
        raise InvalidStripeEvent(
            f"the message key {key!r} is not the event's customer {customer!r}"
        )
    return customer


def rejection(reason: str, source: str, raw: bytes | None, **extra: Any) -> bytes:
    """A `stripe.events.rejected` record: the reason, where the event was, the event."""
    original: Any
    try:
        original = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        original = raw.decode("utf-8", "replace") if raw else None
    return orjson.dumps({"reason": reason, "source": source, "event": original, **extra})


def unmapped_reason(unmapped: UnmappedPrice) -> str:
    price = unmapped.stripePriceId or unmapped.stripeLookupKey or "?"
    return f"unmapped price {price}: {unmapped.reason}"


def plans_document(plans: Iterable[AccountPlan]) -> bytes:
    """The list answer of the read API: `{"data": [...]}`, oldest plan first."""
    ordered = sorted(plans, key=lambda p: (p.startDate, p.id))
    return orjson.dumps({"data": [p.model_dump(mode="json") for p in ordered]})


class StripeEventIntake:
    """What the accounts agent does with one `stripe.events` message."""

    def __init__(
        self,
        state: AccountState,
        rejected: faust.TopicT,
        catalog: LiveCatalog,
        stats: Counter[str],
        adjustments: faust.TopicT | None = None,
    ) -> None:
        self.state = state
        self.rejected = rejected
        self.adjustments = adjustments
        self.catalog = catalog
        self.stats = stats

    async def handle(self, message: Any) -> None:
        source = str(source_of(message))
        raw: bytes | None = message.value
        try:
            unmapped, counts = self._apply(message.key, raw, source)
        except Exception as exc:  # faust would ack a swallowed event: dead-letter it
            reason = str(exc) if isinstance(exc, InvalidStripeEvent) else repr(exc)
            self.stats["accounts_rejected"] += 1
            unexpected = not isinstance(exc, InvalidStripeEvent)
            log.warning("%s rejected: %s", source, reason, exc_info=unexpected)
            await self._reject(message.key, rejection(reason, source, raw))
            return
        for item in unmapped:
            self.stats["accounts_unmapped"] += 1
            reason = unmapped_reason(item)
            log.warning(
                "%s account %s plan %s: %s", source, item.accountCode, item.accountPlanId, reason
            )
            record = rejection(reason, source, raw, unmapped=item.model_dump(mode="json"))
            await self._reject(item.accountCode.encode(), record)
        if counts and self.adjustments is not None:
            await deliver(
                self.adjustments,
                [(a.account.encode(), a.model_dump_json().encode(), None) for a in counts],
            )
            log.info("%s seat counts: %s", source, [(a.counter, a.value) for a in counts])

    def _apply(
        self, key: bytes | None, raw: bytes | None, source: str
    ) -> tuple[list[UnmappedPrice], list[CounterAdjustment]]:
        event = decode_event(raw)
        customer = check_key(key, event)
        account = self.state.account(customer) if customer else None
        plans = self.state.plans(customer) if customer else []
        catalog = self.catalog.current()
        change = apply_event(event, account=account, plans=plans, catalog=catalog)
        counts = self._counts(event, catalog, source)
        ids = f"{event.get('id')} ({event.get('type')}) customer {customer}"
        if change.ignored_reason is not None:
            self.stats["accounts_ignored"] += 1
            log.info("%s %s ignored: %s", source, ids, change.ignored_reason)
            return [], counts
        self.state.write(change)
        self.stats["accounts_applied"] += 1
        log.info(
            "%s %s applied: account %s, plans %s",
            source,
            ids,
            "written" if change.account else "unchanged",
            [p.id for p in change.plans],
        )
        return change.unmapped, counts

    def _counts(
        self, event: dict[str, Any], catalog: Catalog, source: str
    ) -> list[CounterAdjustment]:
        """The event's seat counts; a count that cannot be taken never stops the event."""
        try:
            return quantity_adjustments(event, catalog)
        except ValueError as exc:  # pydantic's ValidationError included
            self.stats["accounts_quantities_rejected"] += 1
            log.warning("%s seat counts not taken: %s", source, exc)
            return []

    async def _reject(self, key: bytes | None, record: bytes) -> None:
        await deliver(self.rejected, [(key, record, None)])

    async def confirm(self) -> None:
        """Wait until Kafka holds every table write (before faust acks the event)."""
        await self.state.confirm()
