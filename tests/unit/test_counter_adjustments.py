"""Counter adjustments in the worker: applied once per uid, the latest value of a moment
counts, bad ones are dead-lettered with the field and the rule; seat counts from Stripe
subscription items' quantities."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streams.accounts.quantities import quantity_adjustments
from streams.billing.counters import CountChange
from streams.counters.state import (
    APPLIED,
    DUPLICATE,
    SUPERSEDED,
    AdjustmentRefused,
    apply_adjustment,
    history_of,
)
from streams.schemas.counters import CounterAdjustment
from streams.topics import COUNTER_ADJUSTMENTS_REJECTED
from tests.fixtures.worker import EXAMPLE, OfflineWorker, acked, held_by_the_changelog
from tests.unit import stripe_payloads as sp

ACCOUNT = "cus_1"
TOKYO = sp.price("price_tokyo", lookup_key="tokyo_monthly", product="prod_tokyo")


def day(n: int) -> datetime:
    return datetime(2024, 4, n, tzinfo=UTC)


def adjustment(uid: str, value: int, at: str = "2024-04-16", **fields: Any) -> CounterAdjustment:
    body = {
        "uid": uid,
        "account": ACCOUNT,
        "counter": "seats",
        "date": at,
        "value": value,
        "receivedAt": 1_000,
        **fields,
    }
    return CounterAdjustment.model_validate(body)


def applied(*adjustments: CounterAdjustment) -> tuple[bytes | None, list[str]]:
    stored: bytes | None = None
    outcomes = []
    for one in adjustments:
        result = apply_adjustment(stored, one)
        stored = result.stored or stored
        outcomes.append(result.outcome)
    return stored, outcomes


def test_adjustments_make_a_history_in_time_order_whatever_the_arrival_order() -> None:
    stored, outcomes = applied(adjustment("b", 15, "2024-04-16"), adjustment("a", 10, "2024-04-01"))
    assert outcomes == [APPLIED, APPLIED]
    assert history_of(stored) == [CountChange(day(1), 10), CountChange(day(16), 15)]


def test_the_same_uid_again_changes_nothing() -> None:
    stored, outcomes = applied(adjustment("a", 10), adjustment("a", 10))
    assert outcomes == [APPLIED, DUPLICATE]
    assert history_of(stored) == [CountChange(day(16), 10)]


def test_a_uid_used_again_for_another_value_is_refused_naming_the_uid() -> None:
    stored, _ = applied(adjustment("a", 10))
    with pytest.raises(AdjustmentRefused) as refused:
        apply_adjustment(stored, adjustment("a", 12))
    assert str(refused.value) == (
        "uid: 'a' was already used for counter 'seats' of account 'cus_1' with date "
        "2024-04-16T00:00:00+00:00 and value 10; a uid names one adjustment"
    )


def test_of_two_adjustments_for_the_same_moment_the_one_received_last_counts() -> None:
    first = adjustment("a", 10, receivedAt=2_000)
    late = adjustment("b", 12, receivedAt=1_000)  # received before `first`, delivered after
    stored, outcomes = applied(first, late)
    assert outcomes == [APPLIED, SUPERSEDED]
    assert history_of(stored) == [CountChange(day(16), 10)]
    stored, outcomes = applied(late, first)
    assert outcomes == [APPLIED, APPLIED]
    assert history_of(stored) == [CountChange(day(16), 10)]


# --- the agent -------------------------------------------------------------------------


def wire(**overrides: Any) -> bytes:
    body = {
        "uid": "adj-1",
        "account": ACCOUNT,
        "counter": "seats",
        "date": "2025-02-20",
        "value": 7,
        "receivedAt": 1_000,
    }
    return orjson.dumps({**body, **overrides})


async def test_the_counters_agent_keeps_each_accounts_counter_history(
    offline: OfflineWorker,
) -> None:
    async with offline.agent("counters").test_context() as agent:
        events = [
            await agent.put(wire(), key=ACCOUNT.encode()),
            await agent.put(wire(), key=ACCOUNT.encode()),  # a retry: counted once
            await agent.put(
                wire(uid="adj-2", date="2025-02-25T12:00:00+09:00", value=9), key=ACCOUNT.encode()
            ),
        ]
        await acked(*events)
    counters = offline.context.counters
    assert counters is not None
    assert list(counters.history(ACCOUNT, "seats")) == [
        CountChange(datetime(2025, 2, 20, tzinfo=UTC), 7),
        CountChange(datetime(2025, 2, 25, 3, tzinfo=UTC), 9),
    ]
    assert offline.context.stats["counter_adjustments_duplicate"] == 1
    assert not offline.kafka.on(offline.topics.name(COUNTER_ADJUSTMENTS_REJECTED))


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (b"{not json", ACCOUNT, "adjustment: Invalid JSON"),
        (wire(value=-1), ACCOUNT, "value: Input should be greater than or equal to 0"),
        (wire(value=2.5), ACCOUNT, "value: Input should be a valid integer"),
        (wire(date="16/04/2024"), ACCOUNT, "date: Value error, expected an ISO 8601 date"),
        (wire(counter="licences"), ACCOUNT, "counter: unknown counter 'licences'"),
        (wire(), "cus_2", "account: the message key b'cus_2' is not the adjustment's account"),
    ],
    ids=["not-json", "negative", "fraction", "bad-date", "unknown-counter", "keyed-by-another"],
)
async def test_an_adjustment_it_cannot_apply_is_dead_lettered_with_the_field_and_the_rule(
    offline: OfflineWorker, value: bytes, key: str, reason: str
) -> None:
    async with offline.agent("counters").test_context() as agent:
        events = [
            await agent.put(value, key=key.encode()),
            await agent.put(wire(uid="good"), key=ACCOUNT.encode()),
        ]
        await acked(*events)
    [dead] = offline.kafka.on(offline.topics.name(COUNTER_ADJUSTMENTS_REJECTED))
    letter = dead.json()
    assert letter["reason"].startswith(reason)
    assert letter["source"] == f"{offline.topics.counter_adjustments}[0]@0"
    counters = offline.context.counters
    assert counters is not None
    assert [c.value for c in counters.history(ACCOUNT, "seats")] == [7]


async def test_an_adjustment_is_not_acknowledged_before_kafka_holds_it(
    offline: OfflineWorker,
) -> None:
    offline.kafka.hold()
    async with offline.agent("counters").test_context() as agent:
        event = await agent.put(wire(), key=ACCOUNT.encode())
        assert await held_by_the_changelog(offline.kafka, event)
        offline.kafka.release()
        await acked(event)


# --- seat counts from Stripe -----------------------------------------------------------


def seat_subscription(kind: str, quantity: int, *, created: int, api: str = sp.BASIL) -> Any:
    sub = sp.subscription("sub_t", api=api, customer=ACCOUNT, items=[sp.Item("si_t", TOKYO)])
    sub["start_date"] = sp.T0 - 30
    sub["items"]["data"][0]["quantity"] = quantity
    return sp.event(kind, sub, created=created, api=api, id=f"evt_{created}")


@pytest.mark.parametrize("api", sp.API_VERSIONS)
def test_a_mapped_subscription_item_quantity_is_the_plans_counter_from_its_moment(
    api: str,
) -> None:
    created = quantity_adjustments(
        seat_subscription("customer.subscription.created", 3, created=sp.T0, api=api), EXAMPLE
    )
    updated = quantity_adjustments(
        seat_subscription("customer.subscription.updated", 5, created=sp.T0 + 600, api=api),
        EXAMPLE,
    )
    assert [(a.uid, a.counter, a.value, a.date) for a in created + updated] == [
        ("stripe:evt_1740000000:si_t", "seats", 3, datetime.fromtimestamp(sp.T0 - 30, UTC)),
        ("stripe:evt_1740000600:si_t", "seats", 5, datetime.fromtimestamp(sp.T0 + 600, UTC)),
    ]
    assert {a.source for a in created + updated} == {"stripe"}


def test_no_seat_count_comes_from_an_unmapped_quantity_or_an_ended_subscription() -> None:
    pro = sp.subscription("sub_1", api=sp.BASIL, customer=ACCOUNT, items=[sp.Item("si_1", PRO)])
    assert (
        quantity_adjustments(sp.event("customer.subscription.created", pro, created=1), EXAMPLE)
        == []
    )
    deleted = seat_subscription("customer.subscription.deleted", 3, created=sp.T0)
    assert quantity_adjustments(deleted, EXAMPLE) == []
    assert (
        quantity_adjustments(sp.event("customer.created", sp.customer(), created=1), EXAMPLE) == []
    )


PRO = sp.price("price_pro", lookup_key="pro_monthly", product="prod_pro")


async def test_the_accounts_agent_publishes_a_seat_subscriptions_quantity_as_an_adjustment(
    offline: OfflineWorker,
) -> None:
    payload = seat_subscription("customer.subscription.created", 4, created=sp.T0)
    async with offline.agent("accounts").test_context() as agent:
        await acked(await agent.put(orjson.dumps(payload), key=ACCOUNT.encode()))
    [record] = offline.kafka.on(offline.topics.counter_adjustments)
    assert record.key == ACCOUNT.encode()
    assert (record.json()["counter"], record.json()["value"]) == ("seats", 4)
