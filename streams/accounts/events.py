"""Stripe events → Account and Account Plan state, as pure functions.

The accounts agent keeps two tables, accounts by account code (= Stripe customer id) and
account plans by id; for each event on `stripe.events` it calls `apply_event` with the
current state and writes back the returned `AccountsChange`.

Ordering. Stripe delivers at least once and out of order, so every piece of state records
the event it came from (`sourceEventCreated`, `sourceEventId`) and an event applies only
when its ordering key `(created, lifecycle rank, event id)` is greater than the state's:
the same event again is a "duplicate", an older one is "stale". At equal `created` the
state later in the lifecycle wins (a deleted customer over a live one, a canceled
subscription over an active one), then the greater event id. That is a total order, so
every arrival order ends in the state of the greatest event.

Three guards, because these sources race without superseding each other: the account's
customer fields (customer.* events), its checkout link (checkout.session.completed) and
each subscription's plans (the greatest key among the plans of that subscription).
Subscription events are full snapshots: each rewrites every current plan of the
subscription, which also records the guard.

Plan history. A snapshot cannot tell when a price changed, so a change first seen in a
snapshot is dated at that event. The update that made the change dates it exactly in
`previous_attributes`; even when it arrives stale (or before the creation) it moves the
boundary there, so every arrival order bills the same history. Ids never change once
written (bills refer to them): a plan period's id is `<base>@<start as first known>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from streams.schemas.accounts import Account, AccountPlan, AccountPlanStatus, CheckoutLink
from streams.schemas.catalog import Catalog
from streams.schemas.errors import error_text
from streams.schemas.stripe_events import (
    CheckoutSession,
    Customer,
    Event,
    Lenient,
    Price,
    Product,
    Subscription,
    SubscriptionItem,
)

DUPLICATE = "duplicate"
STALE = "stale"
PLAN_METADATA_KEY = "meterline_plan"

CUSTOMER_EVENTS = frozenset({"customer.created", "customer.updated", "customer.deleted"})
CHECKOUT_COMPLETED = "checkout.session.completed"
SUBSCRIPTION_DELETED = "customer.subscription.deleted"
# Every one of these carries the whole subscription, so each is applied as a snapshot.
SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        SUBSCRIPTION_DELETED,
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "customer.subscription.pending_update_applied",
        "customer.subscription.pending_update_expired",
        "customer.subscription.trial_will_end",
    }
)

# Stripe subscription status → account plan status. PAST_DUE stands for every state in
# which the subscription lives but payment is outstanding or collection is paused.
_STATUS = {
    "active": AccountPlanStatus.ACTIVE,
    "trialing": AccountPlanStatus.TRIALING,
    "past_due": AccountPlanStatus.PAST_DUE,
    "unpaid": AccountPlanStatus.PAST_DUE,
    "incomplete": AccountPlanStatus.PAST_DUE,
    "paused": AccountPlanStatus.PAST_DUE,
    "canceled": AccountPlanStatus.CANCELED,
    "incomplete_expired": AccountPlanStatus.CANCELED,
}
# Lifecycle rank: the tie-break between two events of the same second.
_RANK = {
    "incomplete": 0,
    "trialing": 1,
    "active": 2,
    "past_due": 3,
    "unpaid": 4,
    "paused": 4,
    "canceled": 5,
    "incomplete_expired": 5,
}
_FINAL = frozenset({AccountPlanStatus.ENDED, AccountPlanStatus.CANCELED})
# Items created with their subscription share its timestamp; allow for a clock tick.
_SAME_REQUEST_SECONDS = 60

OrderKey = tuple[int, int, str]
M = TypeVar("M", bound=Lenient)


class InvalidStripeEvent(ValueError):
    """The event lacks a field we need; the agent dead-letters it with this reason."""


class UnmappedPrice(BaseModel):
    """A subscription item whose price maps to no meterline plan (yet)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accountCode: str
    accountPlanId: str
    stripeSubscriptionId: str
    stripeSubscriptionItemId: str
    stripePriceId: str | None
    stripeLookupKey: str | None
    stripeProductId: str | None
    reason: str


@dataclass(frozen=True)
class AccountsChange:
    """What to write back: `account` None = unchanged; `plans` are upserts by id."""

    account: Account | None = None
    plans: list[AccountPlan] = field(default_factory=list)
    unmapped: list[UnmappedPrice] = field(default_factory=list)
    ignored_reason: str | None = None


class PlanMatch(NamedTuple):
    plan_code: str | None
    reason: str


def customer_key(event: Mapping[str, Any]) -> str | None:
    """The Stripe customer id an event belongs to (the `stripe.events` key), if any."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        return None
    owner = obj.get("id") if obj.get("object") == "customer" else obj.get("customer")
    if isinstance(owner, Mapping):  # expanded customer
        owner = owner.get("id")
    return owner if isinstance(owner, str) and owner else None


def apply_event(
    event: Mapping[str, Any],
    *,
    account: Account | None,
    plans: Sequence[AccountPlan],
    catalog: Catalog,
) -> AccountsChange:
    """Apply one Stripe event to an account and its plans; raise InvalidStripeEvent."""
    parsed = _parse(Event, event, "event")
    if parsed.type in CUSTOMER_EVENTS:
        return _apply_customer(parsed, account)
    if parsed.type == CHECKOUT_COMPLETED:
        return _apply_checkout(parsed, account)
    if parsed.type in SUBSCRIPTION_EVENTS:
        return _apply_subscription(parsed, account, plans, catalog)
    return AccountsChange(ignored_reason=f"unsupported event type {parsed.type!r}")


def resolve_plan(price: Price | None, catalog: Catalog) -> PlanMatch:
    """The plan a Stripe price maps to: mapping by price id, lookup key, product id, then
    `meterline_plan` in the price's metadata, then in its (expanded) product's."""
    if price is None:
        return PlanMatch(None, "the subscription item has no price")
    candidates: list[tuple[str, str | None]] = []
    for attribute, value in (
        ("stripePriceId", price.id),
        ("stripeLookupKey", price.lookup_key),
        ("stripeProductId", price.product_id),
    ):
        candidates.extend(
            (f"plan mapping {m.code!r} ({attribute})", m.plan)
            for m in catalog.planMappings.values()
            if value is not None and getattr(m, attribute) == value
        )
    candidates.append(("price metadata", price.metadata.get(PLAN_METADATA_KEY)))
    product_metadata = price.product.metadata if isinstance(price.product, Product) else {}
    candidates.append(("product metadata", product_metadata.get(PLAN_METADATA_KEY)))
    for source, code in candidates:
        if code is None:
            continue
        if code not in catalog.plans:
            return PlanMatch(None, f"{source} names plan {code!r}, which is not in the catalog")
        return PlanMatch(code, source)
    return PlanMatch(
        None,
        f"no plan mapping for price {price.id!r} (lookup key {price.lookup_key!r}, "
        f"product {price.product_id!r}) and no {PLAN_METADATA_KEY!r} metadata",
    )


# --- customers -------------------------------------------------------------------------


def _apply_customer(event: Event, account: Account | None) -> AccountsChange:
    customer = _parse(Customer, event.data.object, "data.object")
    deleted = event.type == "customer.deleted" or customer.deleted
    guard = None if account is None else _account_key(account)
    if ignored := _verdict((event.created, int(deleted), event.id), guard):
        return AccountsChange(ignored_reason=ignored)
    given = customer.model_fields_set  # a field Stripe left out keeps its value
    updates: dict[str, Any] = {
        "stripeCustomerId": customer.id,
        "deleted": deleted,
        "sourceEventCreated": event.created,
        "sourceEventId": event.id,
    }
    if "name" in given:
        updates["name"] = customer.name
    if "email" in given:
        updates["emailAddress"] = customer.email
    if "metadata" in given:
        updates["metadata"] = customer.metadata
    if customer.currency:  # null until the first invoice or subscription; never unset
        updates["currency"] = customer.currency.upper()
    if customer.created is not None:
        updates["createdAt"] = _dt(customer.created)
    base = account or Account(code=customer.id)
    return AccountsChange(account=base.model_copy(update=updates))


def _account_key(account: Account) -> OrderKey | None:
    if account.sourceEventId is None:
        return None
    return (account.sourceEventCreated, int(account.deleted), account.sourceEventId)


# --- checkout --------------------------------------------------------------------------


def _apply_checkout(event: Event, account: Account | None) -> AccountsChange:
    session = _parse(CheckoutSession, event.data.object, "data.object")
    if session.mode != "subscription":
        return AccountsChange(
            ignored_reason=f"checkout session mode is {session.mode!r}, not 'subscription'"
        )
    customer_id = session.customer_id
    if customer_id is None:
        return AccountsChange(ignored_reason="checkout session has no customer")
    link = account.checkout if account else None
    guard = None if link is None else (link.sourceEventCreated, 0, link.sourceEventId or "")
    if ignored := _verdict((event.created, 0, event.id), guard):
        return AccountsChange(ignored_reason=ignored)
    # m3ter creates the account when a checkout names a customer it does not know.
    base = account or Account(code=customer_id, stripeCustomerId=customer_id)
    checkout = CheckoutLink(
        sessionId=session.id,
        subscriptionId=session.subscription_id,
        metadata=session.metadata,
        sourceEventCreated=event.created,
        sourceEventId=event.id,
    )
    updates: dict[str, Any] = {
        "checkout": checkout,
        "clientReferenceId": session.client_reference_id or base.clientReferenceId,
        "currency": base.currency or _upper(session.currency),
    }
    return AccountsChange(account=base.model_copy(update=updates))


# --- subscriptions ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    """One subscription event, reduced to what every account plan of it shares."""

    event: Event
    subscription: Subscription
    stripe_status: str

    @property
    def at(self) -> int:
        return self.event.created

    def status(self, *, mapped: bool) -> AccountPlanStatus:
        status = _STATUS.get(self.stripe_status, AccountPlanStatus.PAST_DUE)
        return status if mapped or status in _FINAL else AccountPlanStatus.UNMAPPED

    def end_date(self) -> int | None:
        sub = self.subscription
        if _STATUS.get(self.stripe_status) is AccountPlanStatus.CANCELED:
            return _first(sub.ended_at, sub.canceled_at, sub.cancel_at, default=self.at)
        return sub.cancel_at  # a scheduled cancellation; None when withdrawn

    def item_start(self, item: SubscriptionItem) -> int:
        sub = self.subscription
        if (
            item.created is not None
            and sub.created is not None
            and item.created > sub.created + _SAME_REQUEST_SECONDS
        ):
            return item.created  # added to a running subscription
        return _first(sub.start_date, sub.created, item.created, default=self.at)

    def stamp(self) -> dict[str, Any]:
        return {
            "stripeStatus": self.stripe_status,
            "sourceEventCreated": self.event.created,
            "sourceEventId": self.event.id,
        }


def _apply_subscription(
    event: Event, account: Account | None, plans: Sequence[AccountPlan], catalog: Catalog
) -> AccountsChange:
    sub = _parse(Subscription, event.data.object, "data.object")
    deleted = event.type == SUBSCRIPTION_DELETED
    canceled = _STATUS.get(sub.status) is AccountPlanStatus.CANCELED
    snap = _Snapshot(event, sub, "canceled" if deleted and not canceled else sub.status)
    own = [p for p in plans if p.stripeSubscriptionId == sub.id]
    guard = max((_plan_key(p) for p in own), default=None)
    verdict = _verdict((event.created, _rank(snap.stripe_status), event.id), guard)
    if verdict == DUPLICATE:
        return AccountsChange(ignored_reason=verdict)
    written = {} if verdict else {p.id: p for p in _snapshot_plans(snap, own, catalog)}
    # Even a stale update still tells when a price changed: put that into the history.
    state = list(({p.id: p for p in own} | written).values())
    written |= {p.id: p for p in _split_at_price_changes(snap, state, catalog)}
    if verdict and not written:
        return AccountsChange(ignored_reason=verdict)
    # Every live plan written carries the price its item has in this snapshot.
    reasons = {
        item.id: resolve_plan(item.effective_price, catalog).reason for item in sub.items.data
    }
    unmapped = [
        _unmapped(plan, reasons.get(plan.stripeSubscriptionItemId or "", "no plan for the price"))
        for plan in written.values()
        if plan.status is AccountPlanStatus.UNMAPPED
    ]
    return AccountsChange(
        account=_account_for(sub, account), plans=list(written.values()), unmapped=unmapped
    )


def _snapshot_plans(
    snap: _Snapshot, own: Sequence[AccountPlan], catalog: Catalog
) -> list[AccountPlan]:
    """Every plan the snapshot writes: each item's live plan, and the plans it ends."""
    current = _current_by_item(own)
    taken = {p.id for p in own}
    out: list[AccountPlan] = []
    for item in snap.subscription.items.data:
        written = _item_plans(snap, item, current.get(item.id), taken, catalog)
        taken.update(plan.id for plan in written)
        out.extend(written)
    present = {item.id for item in snap.subscription.items.data}
    out.extend(
        _end(plan, snap)
        for item_id, plan in current.items()
        if item_id not in present and plan.status not in _FINAL
    )
    return out


def _item_plans(
    snap: _Snapshot,
    item: SubscriptionItem,
    current: AccountPlan | None,
    taken: set[str],
    catalog: Catalog,
) -> list[AccountPlan]:
    """The plans one subscription item writes (the live one last)."""
    price = item.effective_price
    price_id = price.id if price else None
    if current is None:
        start = snap.item_start(item)
        plan_id = _new_id(snap, item, start, taken)
        return [_plan(snap, item, resolve_plan(price, catalog).plan_code, plan_id, start)]
    if current.stripePriceId != price_id and snap.at > _epoch(current.startDate):
        # A plan change: the old plan ends now and a new one, with its own id, starts.
        plan_id = f"{_base_id(current)}@{snap.at}"
        new = _plan(snap, item, resolve_plan(price, catalog).plan_code, plan_id, snap.at)
        return [_end(current, snap), new]
    if current.planCode is not None and current.stripePriceId == price_id:
        plan_code: str | None = current.planCode  # a new mapping never moves a running plan
    else:
        plan_code = resolve_plan(price, catalog).plan_code
    return [_plan(snap, item, plan_code, current.id, _epoch(current.startDate))]


def _split_at_price_changes(
    snap: _Snapshot, plans: Sequence[AccountPlan], catalog: Catalog
) -> list[AccountPlan]:
    """Put a price change that `previous_attributes` dates at this event into the history,
    when the plans do not show it there yet (the change event came late, or first)."""
    out: list[AccountPlan] = []
    now = {item.id: item for item in snap.subscription.items.data}
    for item_id, before in _previous_items(snap.event, snap.subscription).items():
        old_price = before.effective_price
        new_price_id = _price_id(now[item_id]) if item_id in now else None
        if old_price is None or new_price_id in (None, old_price.id):
            continue
        covering = _covering(plans, item_id, snap.at)
        if covering is None:
            continue
        if covering.stripePriceId == new_price_id:
            out += _split(covering, old_price, snap, catalog)
        elif covering.stripePriceId == old_price.id:
            out += _move_change_back(covering, plans, new_price_id, snap.at)
    return out


def _split(
    plan: AccountPlan, old_price: Price, snap: _Snapshot, catalog: Catalog
) -> list[AccountPlan]:
    """A plan with the new price began before the change: the part before keeps its id
    with the old price, the rest becomes `<base>@<change>`, as an in-order change would."""
    earlier = _end(plan, snap).model_copy(
        update={
            "planCode": resolve_plan(old_price, catalog).plan_code,
            "stripePriceId": old_price.id,
            "stripeLookupKey": old_price.lookup_key,
            "stripeProductId": old_price.product_id,
        }
    )
    later = plan.model_copy(update={"id": f"{_base_id(plan)}@{snap.at}", "startDate": _dt(snap.at)})
    return [earlier, later]


def _move_change_back(
    plan: AccountPlan, plans: Sequence[AccountPlan], new_price_id: str | None, moment: int
) -> list[AccountPlan]:
    """A later snapshot already showed the new price, so the change was dated then: move
    it back to the real moment. Ids stay (bills refer to them); only the dates move."""
    following = min(
        (
            p
            for p in plans
            if p.stripeSubscriptionItemId == plan.stripeSubscriptionItemId
            and p.startDate > plan.startDate
        ),
        key=lambda p: (p.startDate, p.id),
        default=None,
    )
    if (
        following is None
        or following.stripePriceId != new_price_id
        or following.startDate != plan.endDate
    ):
        return []
    return [
        plan.model_copy(update={"endDate": _dt(moment)}),
        following.model_copy(update={"startDate": _dt(moment)}),
    ]


def _covering(plans: Sequence[AccountPlan], item_id: str, moment: int) -> AccountPlan | None:
    """The item's plan that started last before `moment`, if it still ran then."""
    started = [
        p for p in plans if p.stripeSubscriptionItemId == item_id and _epoch(p.startDate) < moment
    ]
    plan = max(started, key=lambda p: (p.startDate, p.id), default=None)
    if plan is None or (plan.endDate is not None and _epoch(plan.endDate) <= moment):
        return None
    return plan


def _plan(
    snap: _Snapshot, item: SubscriptionItem, plan_code: str | None, plan_id: str, start: int
) -> AccountPlan:
    sub = snap.subscription
    price = item.effective_price
    return AccountPlan(
        id=plan_id,
        accountCode=sub.customer_id,
        planCode=plan_code,
        status=snap.status(mapped=plan_code is not None),
        startDate=_dt(start),
        endDate=_optional_dt(snap.end_date()),
        currentPeriodStart=_optional_dt(
            _first_or_none(item.current_period_start, sub.current_period_start)
        ),
        currentPeriodEnd=_optional_dt(
            _first_or_none(item.current_period_end, sub.current_period_end)
        ),
        stripeSubscriptionId=sub.id,
        stripeSubscriptionItemId=item.id,
        stripePriceId=price.id if price else None,
        stripeLookupKey=price.lookup_key if price else None,
        stripeProductId=price.product_id if price else None,
        **snap.stamp(),
    )


def _end(plan: AccountPlan, snap: _Snapshot) -> AccountPlan:
    """Close a plan superseded by a plan change or whose item left the subscription."""
    update = {"status": AccountPlanStatus.ENDED, "endDate": _dt(snap.at), **snap.stamp()}
    return plan.model_copy(update=update)


def _base_id(plan: AccountPlan) -> str:
    return plan.id.partition("@")[0]


def _new_id(snap: _Snapshot, item: SubscriptionItem, start: int, taken: set[str]) -> str:
    sub = snap.subscription
    base = sub.id if len(sub.items.data) == 1 else item.id
    return base if base not in taken else f"{base}@{start}"


def _current_by_item(plans: Iterable[AccountPlan]) -> dict[str, AccountPlan]:
    """Each item's latest plan (earlier ones were superseded by plan changes)."""
    current: dict[str, AccountPlan] = {}
    for plan in sorted(plans, key=lambda p: (p.startDate, p.id)):
        if plan.stripeSubscriptionItemId is not None:
            current[plan.stripeSubscriptionItemId] = plan
    return current


def _previous_items(event: Event, sub: Subscription) -> dict[str, SubscriptionItem]:
    """Items as they were before an update, from `previous_attributes` (advisory)."""
    previous = event.data.previous_attributes or {}
    items = previous.get("items")
    raw = items.get("data") if isinstance(items, Mapping) else None
    if raw is None and isinstance(previous.get("plan"), Mapping) and len(sub.items.data) == 1:
        # acacia: a single-price subscription reports its old plan at the top level.
        raw = [{"id": sub.items.data[0].id, "plan": previous["plan"]}]
    out: dict[str, SubscriptionItem] = {}
    for entry in raw if isinstance(raw, list) else []:
        try:
            item = SubscriptionItem.model_validate(entry)
        except ValidationError:
            continue  # a partial entry tells us nothing about the price
        out[item.id] = item
    return out


def _account_for(sub: Subscription, account: Account | None) -> Account | None:
    """A subscription for an unknown customer creates its account (m3ter does the same);
    an account without a currency takes the subscription's."""
    currency = _upper(sub.currency)
    if account is None:
        return Account(code=sub.customer_id, stripeCustomerId=sub.customer_id, currency=currency)
    if account.currency is None and currency is not None:
        return account.model_copy(update={"currency": currency})
    return None


def _unmapped(plan: AccountPlan, reason: str) -> UnmappedPrice:
    return UnmappedPrice(
        accountCode=plan.accountCode,
        accountPlanId=plan.id,
        stripeSubscriptionId=plan.stripeSubscriptionId or "",
        stripeSubscriptionItemId=plan.stripeSubscriptionItemId or "",
        stripePriceId=plan.stripePriceId,
        stripeLookupKey=plan.stripeLookupKey,
        stripeProductId=plan.stripeProductId,
        reason=reason,
    )


def _plan_key(plan: AccountPlan) -> OrderKey:
    return (plan.sourceEventCreated, _rank(plan.stripeStatus), plan.sourceEventId or "")


def _rank(stripe_status: str | None) -> int:
    return _RANK.get(stripe_status or "", _RANK["active"])


def _price_id(item: SubscriptionItem) -> str | None:
    price = item.effective_price
    return price.id if price else None


# --- shared ----------------------------------------------------------------------------


def _verdict(event_key: OrderKey, state_key: OrderKey | None) -> str | None:
    """None if the event applies; otherwise why it is ignored."""
    if state_key is None:
        return None
    if event_key[2] == state_key[2]:
        return DUPLICATE
    return STALE if event_key < state_key else None


def _parse(model: type[M], data: Any, where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidStripeEvent(error_text(exc, f"{where}.")) from exc


def _first(*values: int | None, default: int) -> int:
    return next((v for v in values if v is not None), default)


def _first_or_none(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def _dt(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _optional_dt(epoch: int | None) -> datetime | None:
    return None if epoch is None else _dt(epoch)


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _upper(currency: str | None) -> str | None:
    return currency.upper() if currency else None
