"""Stripe events → Account / Account Plan state (streams.accounts.events)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.accounts.events import (
    DUPLICATE,
    STALE,
    AccountsChange,
    InvalidStripeEvent,
    apply_event,
    customer_key,
    resolve_plan,
)
from streams.schemas.accounts import Account, AccountPlan, AccountPlanStatus
from streams.schemas.catalog import Catalog, Plan, PlanMapping
from streams.schemas.stripe_events import Price
from tests.unit.stripe_payloads import (
    ACACIA,
    API_VERSIONS,
    BASIL,
    DAY,
    MONTH,
    T0,
    Item,
    Payload,
    checkout_session,
    customer,
    event,
    price,
    product,
    subscription,
)

MAPPINGS = {
    "m-basic": PlanMapping(code="m-basic", plan="basic", stripePriceId="price_basic"),
    "m-pro": PlanMapping(code="m-pro", plan="pro", stripeLookupKey="pro_monthly"),
    "m-team": PlanMapping(code="m-team", plan="team", stripeProductId="prod_team"),
}
PLANS = {code: Plan(code=code, currency="USD") for code in ("basic", "pro", "team", "meta")}
CATALOG = Catalog(plans=PLANS, planMappings=MAPPINGS)

PRO = price("price_pro", lookup_key="pro_monthly", product="prod_pro")
UNKNOWN = price("price_new", product="prod_new")

apis = pytest.mark.parametrize("api", API_VERSIONS)


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


@dataclass
class Tables:
    """The accounts agent's two tables, written back the way the agent does."""

    catalog: Catalog = CATALOG
    accounts: dict[str, Account] = field(default_factory=dict)
    plans: dict[str, AccountPlan] = field(default_factory=dict)

    def apply(self, payload: Payload) -> AccountsChange:
        key = customer_key(payload)
        assert key is not None
        change = apply_event(
            payload,
            account=self.accounts.get(key),
            plans=[p for p in self.plans.values() if p.accountCode == key],
            catalog=self.catalog,
        )
        if change.account is not None:
            self.accounts[change.account.code] = change.account
        self.plans.update((plan.id, plan) for plan in change.plans)
        return change

    def apply_all(self, *payloads: Payload) -> Tables:
        for payload in payloads:
            self.apply(payload)
        return self


def replayed(*payloads: Payload) -> Tables:
    return Tables().apply_all(*payloads)


def sub_event(type: str, *, created: int, api: str, **sub: Any) -> Payload:
    previous = sub.pop("previous_attributes", None)
    return event(
        f"customer.subscription.{type}",
        subscription(api=api, **sub),
        created=created,
        api=api,
        previous_attributes=previous,
    )


# --- the Kafka key -------------------------------------------------------------------


@apis
def test_customer_key_is_the_customer_id_of_every_handled_object(api: str) -> None:
    assert customer_key(event("customer.updated", customer("cus_9"), created=T0)) == "cus_9"
    assert customer_key(sub_event("created", created=T0, api=api, customer="cus_8")) == "cus_8"
    session = checkout_session(customer="cus_7")
    assert customer_key(event("checkout.session.completed", session, created=T0)) == "cus_7"
    invoice = {"id": "in_1", "object": "invoice", "customer": "cus_6"}
    assert customer_key(event("invoice.created", invoice, created=T0)) == "cus_6"


def test_customer_key_reads_an_expanded_customer() -> None:
    sub = subscription(api=BASIL, customer=customer("cus_5"))
    assert customer_key(event("customer.subscription.created", sub, created=T0)) == "cus_5"


def test_customer_key_is_none_without_a_customer() -> None:
    assert customer_key(event("price.created", price(), created=T0)) is None
    assert customer_key({"type": "customer.created"}) is None
    assert customer_key({"data": {"object": "not an object"}}) is None


# --- customers -----------------------------------------------------------------------


@apis
def test_a_customer_event_for_an_unknown_account_creates_it(api: str) -> None:
    payload = customer("cus_1", currency="eur", metadata={"tier": "gold"})
    tables = replayed(event("customer.updated", payload, created=T0 + 5, api=api))

    account = tables.accounts["cus_1"]
    assert account.code == account.stripeCustomerId == "cus_1"
    assert (account.name, account.emailAddress, account.currency) == (
        "Acme Ltd",
        "billing@acme.test",
        "EUR",
    )
    assert account.metadata == {"tier": "gold"}
    assert account.createdAt == at(T0)
    assert not account.deleted


@apis
def test_customer_updated_replaces_fields_but_a_null_currency_keeps_the_known_one(
    api: str,
) -> None:
    tables = replayed(
        event(
            "customer.created", customer(currency="usd", metadata={"a": "1"}), created=T0, api=api
        ),
        event(
            "customer.updated",
            customer(name="Acme Inc", email=None, currency=None, metadata={}),
            created=T0 + 10,
            api=api,
        ),
    )
    account = tables.accounts["cus_1"]
    assert (account.name, account.emailAddress, account.currency) == ("Acme Inc", None, "USD")
    assert account.metadata == {}


@apis
def test_customer_deleted_marks_the_account_deleted(api: str) -> None:
    tables = replayed(
        event("customer.created", customer(), created=T0, api=api),
        event("customer.deleted", customer(), created=T0 + 10, api=api),
    )
    assert tables.accounts["cus_1"].deleted


def test_a_deleted_customer_payload_without_details_keeps_the_known_ones() -> None:
    tables = replayed(
        event("customer.created", customer(), created=T0),
        event(
            "customer.deleted",
            {"id": "cus_1", "object": "customer", "deleted": True},
            created=T0 + 1,
        ),
    )
    account = tables.accounts["cus_1"]
    assert account.deleted and account.name == "Acme Ltd"


@apis
def test_the_same_customer_event_twice_changes_nothing(api: str) -> None:
    created = event("customer.created", customer(), created=T0, api=api)
    tables = replayed(created)
    before = dict(tables.accounts)

    change = tables.apply(created)

    assert change.ignored_reason == DUPLICATE and change.account is None
    assert tables.accounts == before


@apis
def test_an_older_customer_event_arriving_late_is_stale(api: str) -> None:
    old = event("customer.updated", customer(name="Old name"), created=T0, api=api)
    new = event("customer.updated", customer(name="New name"), created=T0 + 60, api=api)
    tables = replayed(new)

    assert tables.apply(old).ignored_reason == STALE
    assert tables.accounts["cus_1"].name == "New name"


@apis
def test_customer_deleted_before_updated_stays_deleted(api: str) -> None:
    updated = event("customer.updated", customer(name="Renamed"), created=T0 + 5, api=api)
    deleted = event("customer.deleted", customer(), created=T0 + 10, api=api)
    tables = replayed(deleted, updated)
    assert tables.accounts["cus_1"].deleted
    assert tables.accounts["cus_1"].name == "Acme Ltd"


def test_within_one_second_deleted_wins_over_updated_in_either_order() -> None:
    updated = event("customer.updated", customer(name="Renamed"), created=T0, id="evt_zzz")
    deleted = event("customer.deleted", customer(), created=T0, id="evt_aaa")
    assert replayed(updated, deleted).accounts == replayed(deleted, updated).accounts
    assert replayed(updated, deleted).accounts["cus_1"].deleted


def test_within_one_second_and_one_stage_the_greater_event_id_wins_in_either_order() -> None:
    first = event("customer.updated", customer(name="A"), created=T0, id="evt_a")
    second = event("customer.updated", customer(name="B"), created=T0, id="evt_b")
    assert replayed(first, second).accounts["cus_1"].name == "B"
    assert replayed(second, first).accounts["cus_1"].name == "B"


# --- checkout ------------------------------------------------------------------------


@apis
def test_checkout_completed_creates_the_account_and_keeps_its_reference_and_metadata(
    api: str,
) -> None:
    session = checkout_session(client_reference_id="user-42", metadata={"campaign": "spring"})
    tables = replayed(event("checkout.session.completed", session, created=T0, api=api))

    account = tables.accounts["cus_1"]
    assert account.stripeCustomerId == "cus_1"
    assert account.clientReferenceId == "user-42"
    assert account.currency == "USD"
    assert account.checkout is not None
    assert (account.checkout.sessionId, account.checkout.subscriptionId) == ("cs_test_1", "sub_1")
    assert account.checkout.metadata == {"campaign": "spring"}


@apis
def test_checkout_and_customer_events_keep_each_others_fields_whatever_the_order(api: str) -> None:
    created = event("customer.created", customer(metadata={"tier": "gold"}), created=T0, api=api)
    session = checkout_session(client_reference_id="user-42", metadata={"campaign": "spring"})
    completed = event("checkout.session.completed", session, created=T0 + 2, api=api)

    in_order, reversed_ = replayed(created, completed), replayed(completed, created)

    assert in_order.accounts == reversed_.accounts
    account = in_order.accounts["cus_1"]
    assert account.name == "Acme Ltd" and account.metadata == {"tier": "gold"}
    assert account.clientReferenceId == "user-42"


def test_checkout_completed_twice_is_a_duplicate() -> None:
    completed = event("checkout.session.completed", checkout_session(), created=T0)
    tables = replayed(completed)
    assert tables.apply(completed).ignored_reason == DUPLICATE


def test_a_payment_mode_checkout_is_ignored_with_its_reason() -> None:
    session = checkout_session(mode="payment", subscription=None)
    change = apply_event(
        event("checkout.session.completed", session, created=T0),
        account=None,
        plans=[],
        catalog=CATALOG,
    )
    assert change.account is None
    assert change.ignored_reason == "checkout session mode is 'payment', not 'subscription'"


# --- subscriptions -------------------------------------------------------------------


@apis
def test_subscription_created_starts_one_account_plan_per_subscription(api: str) -> None:
    tables = replayed(sub_event("created", created=T0, api=api, start_date=T0 - DAY))

    assert list(tables.plans) == ["sub_1"]
    plan = tables.plans["sub_1"]
    assert plan.accountCode == "cus_1"
    assert plan.planCode == "basic"
    assert plan.status is AccountPlanStatus.ACTIVE
    assert plan.startDate == at(T0 - DAY)
    assert (plan.currentPeriodStart, plan.currentPeriodEnd) == (at(T0), at(T0 + MONTH))
    assert (plan.stripeSubscriptionId, plan.stripeSubscriptionItemId) == ("sub_1", "si_1")
    assert (plan.stripePriceId, plan.stripeProductId) == ("price_basic", "prod_basic")
    assert plan.endDate is None


@apis
def test_a_subscription_for_an_unknown_account_creates_the_account_and_customer_fills_it(
    api: str,
) -> None:
    tables = replayed(sub_event("created", created=T0 + 1, api=api))
    assert tables.accounts["cus_1"] == Account(
        code="cus_1", stripeCustomerId="cus_1", currency="USD"
    )

    tables.apply(event("customer.created", customer(), created=T0, api=api))
    assert tables.accounts["cus_1"].name == "Acme Ltd"


@pytest.mark.parametrize(
    ("stripe_status", "status"),
    [
        ("trialing", AccountPlanStatus.TRIALING),
        ("active", AccountPlanStatus.ACTIVE),
        ("past_due", AccountPlanStatus.PAST_DUE),
        ("unpaid", AccountPlanStatus.PAST_DUE),
        ("incomplete_expired", AccountPlanStatus.CANCELED),
    ],
)
def test_stripe_status_maps_to_account_plan_status(
    stripe_status: str, status: AccountPlanStatus
) -> None:
    tables = replayed(
        sub_event("updated", created=T0, api=BASIL, status=stripe_status, ended_at=T0)
    )
    assert tables.plans["sub_1"].status is status
    assert tables.plans["sub_1"].stripeStatus == stripe_status


@apis
def test_the_same_subscription_event_twice_changes_nothing(api: str) -> None:
    created = sub_event("created", created=T0, api=api)
    tables = replayed(created)
    before = dict(tables.plans)

    change = tables.apply(created)

    assert change.ignored_reason == DUPLICATE
    assert change.plans == [] and change.account is None
    assert tables.plans == before


@apis
def test_updated_before_created_ends_in_the_updated_state(api: str) -> None:
    created = sub_event("created", created=T0, api=api, status="trialing")
    updated = sub_event("updated", created=T0 + DAY, api=api, status="active")

    in_order, reversed_ = replayed(created, updated), replayed(updated, created)

    assert reversed_.plans == in_order.plans
    assert reversed_.plans["sub_1"].status is AccountPlanStatus.ACTIVE
    assert Tables(plans=dict(reversed_.plans)).apply(created).ignored_reason == STALE


@apis
def test_renewal_moves_the_billing_period_of_the_same_account_plan(api: str) -> None:
    renewed = (T0 + MONTH, T0 + 2 * MONTH)
    tables = replayed(
        sub_event("created", created=T0, api=api),
        sub_event("updated", created=T0 + MONTH, api=api, period=renewed),
    )
    assert list(tables.plans) == ["sub_1"]
    plan = tables.plans["sub_1"]
    assert (plan.currentPeriodStart, plan.currentPeriodEnd) == (at(renewed[0]), at(renewed[1]))
    assert plan.startDate == at(T0)


@apis
def test_cancel_at_period_end_sets_the_end_date_and_withdrawing_it_clears_it(api: str) -> None:
    end = T0 + MONTH
    tables = replayed(
        sub_event("created", created=T0, api=api),
        sub_event("updated", created=T0 + DAY, api=api, cancel_at=end, canceled_at=T0 + DAY),
    )
    assert tables.plans["sub_1"].endDate == at(end)
    assert tables.plans["sub_1"].status is AccountPlanStatus.ACTIVE

    tables.apply(sub_event("updated", created=T0 + 2 * DAY, api=api))
    assert tables.plans["sub_1"].endDate is None


@apis
def test_subscription_deleted_cancels_the_plan_at_ended_at(api: str) -> None:
    tables = replayed(
        sub_event("created", created=T0, api=api),
        sub_event(
            "deleted",
            created=T0 + 3 * DAY,
            api=api,
            status="canceled",
            canceled_at=T0 + 2 * DAY,
            ended_at=T0 + 3 * DAY,
        ),
    )
    plan = tables.plans["sub_1"]
    assert plan.status is AccountPlanStatus.CANCELED
    assert plan.endDate == at(T0 + 3 * DAY)


@apis
def test_deleted_before_updated_stays_canceled(api: str) -> None:
    updated = sub_event("updated", created=T0 + DAY, api=api, status="past_due")
    deleted = sub_event(
        "deleted", created=T0 + 2 * DAY, api=api, status="canceled", ended_at=T0 + 2 * DAY
    )
    tables = replayed(deleted)

    assert tables.apply(updated).ignored_reason == STALE
    assert tables.plans["sub_1"].status is AccountPlanStatus.CANCELED


def test_within_one_second_canceled_wins_over_active_in_either_order() -> None:
    active = sub_event("updated", created=T0, api=BASIL, status="active")
    active["id"] = "evt_zzz"
    canceled = sub_event("deleted", created=T0, api=BASIL, status="canceled", ended_at=T0)
    canceled["id"] = "evt_aaa"
    assert replayed(active, canceled).plans == replayed(canceled, active).plans
    assert replayed(active, canceled).plans["sub_1"].status is AccountPlanStatus.CANCELED


# --- plan changes --------------------------------------------------------------------


def changed_to_pro(*, created: int, api: str) -> Payload:
    """An update that swaps the item's price, as Stripe reports it."""
    old_items = subscription(api=api)["items"]
    return sub_event(
        "updated",
        created=created,
        api=api,
        items=[Item("si_1", PRO)],
        previous_attributes={"items": old_items},
    )


@apis
def test_a_price_change_ends_the_old_account_plan_and_starts_a_new_one(api: str) -> None:
    change_at = T0 + 10 * DAY
    tables = replayed(
        sub_event("created", created=T0, api=api), changed_to_pro(created=change_at, api=api)
    )

    old, new = tables.plans["sub_1"], tables.plans[f"sub_1@{change_at}"]
    assert (old.planCode, old.status, old.endDate) == (
        "basic",
        AccountPlanStatus.ENDED,
        at(change_at),
    )
    assert old.startDate == at(T0)
    assert (new.planCode, new.status, new.startDate) == (
        "pro",
        AccountPlanStatus.ACTIVE,
        at(change_at),
    )
    assert new.endDate is None and new.stripePriceId == "price_pro"


@apis
def test_a_price_change_seen_before_the_creation_rebuilds_the_same_history(api: str) -> None:
    created = sub_event("created", created=T0, api=api)
    changed = changed_to_pro(created=T0 + 10 * DAY, api=api)

    assert replayed(changed, created).plans == replayed(created, changed).plans


@apis
def test_renewal_after_a_plan_change_keeps_the_ended_plan_untouched(api: str) -> None:
    change_at = T0 + 10 * DAY
    tables = replayed(
        sub_event("created", created=T0, api=api), changed_to_pro(created=change_at, api=api)
    )
    ended = tables.plans["sub_1"]

    renewal = (T0 + MONTH, T0 + 2 * MONTH)
    tables.apply(
        sub_event("updated", created=T0 + MONTH, api=api, items=[Item("si_1", PRO)], period=renewal)
    )

    assert tables.plans["sub_1"] == ended
    assert tables.plans[f"sub_1@{change_at}"].currentPeriodStart == at(renewal[0])


def history(tables: Tables) -> tuple[tuple[Any, ...], ...]:
    plans = sorted(tables.plans.values(), key=lambda p: p.startDate)
    return tuple((p.planCode, p.status, p.startDate, p.endDate) for p in plans)


@apis
def test_a_late_plan_change_event_moves_the_change_back_to_when_it_happened(api: str) -> None:
    created = sub_event("created", created=T0, api=api)
    renewed_on_pro = sub_event("updated", created=T0 + 20 * DAY, api=api, items=[Item("si_1", PRO)])
    tables = replayed(created, renewed_on_pro)  # the change is first seen, and dated, here

    change = tables.apply(changed_to_pro(created=T0 + 10 * DAY, api=api))

    assert change.ignored_reason is None
    assert history(tables) == (
        ("basic", AccountPlanStatus.ENDED, at(T0), at(T0 + 10 * DAY)),
        ("pro", AccountPlanStatus.ACTIVE, at(T0 + 10 * DAY), None),
    )


@apis
def test_every_arrival_order_of_a_plan_changing_lifecycle_bills_the_same_history(
    api: str,
) -> None:
    lifecycle = [
        sub_event("created", created=T0, api=api, status="trialing"),
        sub_event("updated", created=T0 + DAY, api=api),
        changed_to_pro(created=T0 + 10 * DAY, api=api),
        sub_event(
            "deleted",
            created=T0 + 20 * DAY,
            api=api,
            status="canceled",
            ended_at=T0 + 20 * DAY,
            items=[Item("si_1", PRO)],
        ),
    ]
    histories = {history(replayed(*order)) for order in itertools.permutations(lifecycle)}
    assert histories == {
        (
            ("basic", AccountPlanStatus.ENDED, at(T0), at(T0 + 10 * DAY)),
            ("pro", AccountPlanStatus.CANCELED, at(T0 + 10 * DAY), at(T0 + 20 * DAY)),
        )
    }


# --- unmapped prices -----------------------------------------------------------------


@apis
def test_an_unmapped_price_gives_an_unmapped_plan_and_a_reason(api: str) -> None:
    tables = Tables()
    change = tables.apply(sub_event("created", created=T0, api=api, items=[Item("si_1", UNKNOWN)]))

    plan = tables.plans["sub_1"]
    assert (plan.status, plan.planCode, plan.stripeStatus) == (
        AccountPlanStatus.UNMAPPED,
        None,
        "active",
    )
    [unmapped] = change.unmapped
    assert (unmapped.accountPlanId, unmapped.stripePriceId) == ("sub_1", "price_new")
    assert unmapped.reason == (
        "no plan mapping for price 'price_new' (lookup key None, product 'prod_new') "
        "and no 'meterline_plan' metadata"
    )


@apis
def test_an_unmapped_plan_resolves_on_the_next_event_once_the_mapping_exists(api: str) -> None:
    tables = replayed(sub_event("created", created=T0, api=api, items=[Item("si_1", UNKNOWN)]))
    mapping = PlanMapping(code="m-new", plan="pro", stripePriceId="price_new")
    tables.catalog = Catalog(plans=PLANS, planMappings={**MAPPINGS, "m-new": mapping})

    change = tables.apply(
        sub_event("updated", created=T0 + DAY, api=api, items=[Item("si_1", UNKNOWN)])
    )

    assert change.unmapped == []
    assert list(tables.plans) == ["sub_1"]
    assert (tables.plans["sub_1"].status, tables.plans["sub_1"].planCode) == (
        AccountPlanStatus.ACTIVE,
        "pro",
    )


@apis
def test_a_changed_mapping_does_not_move_a_running_account_plan(api: str) -> None:
    tables = replayed(sub_event("created", created=T0, api=api))
    remapped = PlanMapping(code="m-basic", plan="pro", stripePriceId="price_basic")
    tables.catalog = Catalog(plans=PLANS, planMappings={**MAPPINGS, "m-basic": remapped})

    tables.apply(sub_event("updated", created=T0 + MONTH, api=api))

    assert tables.plans["sub_1"].planCode == "basic"


def test_a_canceled_subscription_with_an_unmapped_price_is_canceled_not_unmapped() -> None:
    deleted = sub_event(
        "deleted",
        created=T0,
        api=BASIL,
        status="canceled",
        ended_at=T0,
        items=[Item("si_1", UNKNOWN)],
    )
    change = Tables().apply(deleted)
    assert change.plans[0].status is AccountPlanStatus.CANCELED
    assert change.unmapped == []


# --- several items -------------------------------------------------------------------


@apis
def test_a_subscription_with_several_items_gets_one_account_plan_per_item(api: str) -> None:
    items = [Item("si_a", price()), Item("si_b", PRO)]
    tables = replayed(sub_event("created", created=T0, api=api, items=items))

    assert {pid: p.planCode for pid, p in tables.plans.items()} == {"si_a": "basic", "si_b": "pro"}
    assert all(p.stripeSubscriptionId == "sub_1" for p in tables.plans.values())


@apis
def test_an_item_added_later_starts_then_and_the_first_plan_keeps_its_id(api: str) -> None:
    added_at = T0 + 5 * DAY
    tables = replayed(
        sub_event("created", created=T0, api=api),
        sub_event(
            "updated",
            created=added_at,
            api=api,
            items=[Item("si_1", price()), Item("si_2", PRO, added_at)],
        ),
    )
    assert set(tables.plans) == {"sub_1", "si_2"}
    assert tables.plans["sub_1"].startDate == at(T0)
    assert tables.plans["si_2"].startDate == at(added_at)


@apis
def test_an_item_removed_from_the_subscription_ends_its_plan(api: str) -> None:
    removed_at = T0 + 5 * DAY
    tables = replayed(
        sub_event("created", created=T0, api=api, items=[Item("si_a", price()), Item("si_b", PRO)]),
        sub_event("updated", created=removed_at, api=api, items=[Item("si_a", price())]),
    )
    assert (tables.plans["si_b"].status, tables.plans["si_b"].endDate) == (
        AccountPlanStatus.ENDED,
        at(removed_at),
    )
    assert tables.plans["si_a"].status is AccountPlanStatus.ACTIVE


# --- price → plan --------------------------------------------------------------------


def match(**price_fields: Any) -> str | None:
    return resolve_plan(Price.model_validate(price(**price_fields)), CATALOG).plan_code


def test_price_id_mapping_wins_over_lookup_key_and_product() -> None:
    assert match(id="price_basic", lookup_key="pro_monthly", product="prod_team") == "basic"
    assert match(id="price_x", lookup_key="pro_monthly", product="prod_team") == "pro"
    assert match(id="price_x", product="prod_team") == "team"


def test_price_metadata_wins_over_expanded_product_metadata() -> None:
    expanded = product("prod_x", metadata={"meterline_plan": "team"})
    assert match(id="price_x", product=expanded) == "team"
    assert match(id="price_x", product=expanded, metadata={"meterline_plan": "meta"}) == "meta"


def test_metadata_naming_a_plan_missing_from_the_catalog_is_unmapped_with_that_reason() -> None:
    found = resolve_plan(
        Price.model_validate(price("price_x", metadata={"meterline_plan": "gone"})), CATALOG
    )
    assert found.plan_code is None
    assert found.reason == "price metadata names plan 'gone', which is not in the catalog"


def test_an_item_with_only_the_legacy_plan_object_resolves() -> None:
    sub = subscription(api=ACACIA)
    del sub["items"]["data"][0]["price"]
    tables = replayed(event("customer.subscription.created", sub, created=T0, api=ACACIA))
    assert tables.plans["sub_1"].planCode == "basic"


# --- what is not ours ----------------------------------------------------------------


def test_an_unsupported_event_type_is_ignored_with_its_type() -> None:
    change = apply_event(
        event("invoice.paid", {"id": "in_1", "customer": "cus_1"}, created=T0),
        account=None,
        plans=[],
        catalog=CATALOG,
    )
    assert change.ignored_reason == "unsupported event type 'invoice.paid'"


def test_a_subscription_without_a_status_is_rejected_naming_the_field() -> None:
    sub = subscription(api=BASIL)
    del sub["status"]
    with pytest.raises(InvalidStripeEvent, match=r"data\.object\.status: Field required"):
        apply_event(
            event("customer.subscription.updated", sub, created=T0),
            account=None,
            plans=[],
            catalog=CATALOG,
        )
