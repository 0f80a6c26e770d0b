"""The accounts agent without a broker (faust's `agent.test_context()`): Stripe events
become accounts and account plans; an event it cannot apply is dead-lettered with the
reason, and nothing else is lost."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.schemas.accounts import AccountPlanStatus
from tests.fixtures.worker import (
    OfflineWorker,
    acked,
    customer_created,
    held_by_the_changelog,
    subscription_created,
)

CUSTOMER = "cus_1"


async def test_a_stripe_customer_and_its_subscription_create_the_account_and_its_plan(
    offline: OfflineWorker,
) -> None:
    async with offline.agent("accounts").test_context() as agent:
        events = [
            await agent.put(orjson.dumps(payload), key=CUSTOMER.encode())
            for payload in (customer_created(CUSTOMER), subscription_created(CUSTOMER))
        ]
        await acked(*events)

    accounts = offline.context.accounts
    assert accounts is not None
    account = accounts.account(CUSTOMER)
    assert account is not None
    assert (account.name, account.emailAddress, account.stripeCustomerId) == (
        "Acme Ltd",
        "billing@acme.test",
        CUSTOMER,
    )
    [plan] = accounts.plans(CUSTOMER)
    assert (plan.planCode, plan.status, plan.stripeSubscriptionId) == (
        "pro",
        AccountPlanStatus.ACTIVE,
        "sub_1",
    )
    assert not offline.kafka.on(offline.topics.stripe_events_rejected)
    assert not offline.kafka.unacknowledged()


async def test_an_event_is_not_acknowledged_before_kafka_holds_the_account(
    offline: OfflineWorker,
) -> None:
    offline.kafka.hold()
    async with offline.agent("accounts").test_context() as agent:
        event = await agent.put(orjson.dumps(customer_created(CUSTOMER)), key=CUSTOMER.encode())
        assert await held_by_the_changelog(offline.kafka, event)
        offline.kafka.release()
        await acked(event)


INVALID = subscription_created(CUSTOMER, items=None)
ANOTHERS = subscription_created(CUSTOMER)


@pytest.mark.parametrize(
    ("value", "key", "reason", "carried"),
    [
        (b"{not json", CUSTOMER, "the message is not JSON: ", "{not json"),
        (
            orjson.dumps(INVALID),
            CUSTOMER,
            "data.object.items: Input should be a valid dictionary",
            INVALID,
        ),
        (
            orjson.dumps(ANOTHERS),
            "cus_2",
            "the message key b'cus_2' is not the event's customer 'cus_1'",
            ANOTHERS,
        ),
    ],
    ids=["not-json", "invalid-field", "keyed-by-another-customer"],
)
async def test_an_event_it_cannot_apply_is_dead_lettered_with_the_reason_and_the_next_one_applies(
    offline: OfflineWorker, value: bytes, key: str, reason: str, carried: Any
) -> None:
    async with offline.agent("accounts").test_context() as agent:
        events = [
            await agent.put(value, key=key.encode()),
            await agent.put(orjson.dumps(customer_created(CUSTOMER)), key=CUSTOMER.encode()),
        ]
        await acked(*events)

    [dead] = offline.kafka.on(offline.topics.stripe_events_rejected)
    assert dead.key == key.encode()
    letter = dead.json()
    assert letter["reason"].startswith(reason)
    assert letter["source"] == f"{offline.topics.stripe_events}[0]@0"
    assert letter["event"] == carried
    accounts = offline.context.accounts
    assert accounts is not None
    assert accounts.account(CUSTOMER) is not None
    assert accounts.plans(CUSTOMER) == []
