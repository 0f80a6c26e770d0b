"""Bill previews on a worker without a broker: the bill a run at that moment would make,
merged with the stored bills, and nothing stored or published; 404 reasons naming why."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import orjson
import pytest

from streams.billing.preview import NoPreview, preview
from streams.billing.state import Billing
from streams.clock import DAY_MS, HOUR_MS, from_ms
from tests.fixtures.worker import T0_MS, OfflineWorker, acked, home, measurement, message
from tests.unit import stripe_payloads as sp
from tests.unit.test_agents_billing import CUSTOMER, command, subscribe_to_pro, use


def billing_of(offline: OfflineWorker) -> Billing:
    billing = offline.context.locks
    assert isinstance(billing, Billing)
    return billing


async def test_a_preview_is_the_bill_of_the_period_with_the_usage_known_now_and_is_not_published(
    offline: OfflineWorker,
) -> None:
    offline.now_ms = T0_MS + 2 * DAY_MS
    await subscribe_to_pro(offline)
    await use(offline, 400, 350, 250)
    billing = billing_of(offline)

    [bill] = preview(billing, CUSTOMER, from_ms(offline.now_ms))

    # pro: 99.00 standing charge, 1,000 calls at 0.0015 + 5.00 fee, no storage
    assert (bill.version, bill.total, bill.currency) == (1, Decimal("105.50"), "USD")
    assert bill.startDate <= from_ms(offline.now_ms) < bill.endDate
    assert offline.kafka.on(offline.topics.bills) == []
    assert billing.bills_of(CUSTOMER) == {}
    assert billing.index.get(CUSTOMER.encode()) is None


async def test_a_preview_after_a_bill_run_shows_the_next_version_and_leaves_the_stored_one(
    offline: OfflineWorker,
) -> None:
    offline.now_ms = T0_MS + 2 * DAY_MS
    await subscribe_to_pro(offline)
    await use(offline, 400, 350, 250)
    await command(offline, {"type": "run", "account": CUSTOMER})
    [stored] = billing_of(offline).bills_of(CUSTOMER).values()
    [same] = preview(billing_of(offline), CUSTOMER, from_ms(offline.now_ms))
    assert same == stored  # unchanged usage: the stored bill, as a run would leave it
    await more_usage(offline, 1000, 1000, 1000)

    [bill] = preview(billing_of(offline), CUSTOMER, from_ms(offline.now_ms))

    assert (bill.id, bill.version) == (stored.id, stored.version + 1)
    assert bill.total == Decimal("99.00") + Decimal("4000") * Decimal("0.0015") + Decimal("5.00")
    assert billing_of(offline).bills_of(CUSTOMER) == {stored.id: stored}
    assert len(offline.kafka.on(offline.topics.bills)) == 1


async def more_usage(offline: OfflineWorker, *calls: int) -> None:
    """CUSTOMER makes more API calls (new uids) two hours into the subscription."""
    async with offline.agent("usage").test_context() as agent:
        events = [
            await agent.put(
                message(
                    measurement(f"more-{n}", count, account=CUSTOMER, ts_ms=T0_MS + 2 * HOUR_MS)
                ),
                key=CUSTOMER.encode(),
                partition=home(CUSTOMER),
            )
            for n, count in enumerate(calls)
        ]
        await acked(*events)


async def test_a_preview_of_an_unknown_account_names_the_account(offline: OfflineWorker) -> None:
    with pytest.raises(NoPreview) as missing:
        preview(billing_of(offline), "nobody", from_ms(offline.now_ms))
    assert (missing.value.parameter, missing.value.reason) == (
        "account",
        "account 'nobody' not found",
    )


async def test_a_preview_before_the_plan_starts_names_at_and_why(offline: OfflineWorker) -> None:
    await subscribe_to_pro(offline)
    before = from_ms(T0_MS) - timedelta(days=1)

    with pytest.raises(NoPreview) as missing:
        preview(billing_of(offline), CUSTOMER, before)

    assert missing.value.parameter == "at"
    assert missing.value.reason == (
        f"account {CUSTOMER!r} has no account plan on {before.isoformat()}"
    )


async def test_a_preview_of_a_plan_not_mapped_to_a_plan_names_at_and_why(
    offline: OfflineWorker,
) -> None:
    unknown = sp.price("price_x", lookup_key="no_such_plan", product="prod_x")
    created = sp.event(
        "customer.subscription.created",
        sp.subscription("sub_x", api=sp.BASIL, customer=CUSTOMER, items=[sp.Item("si_x", unknown)]),
        created=sp.T0,
    )
    async with offline.agent("accounts").test_context() as agent:
        await acked(await agent.put(orjson.dumps(created), key=CUSTOMER.encode()))

    with pytest.raises(NoPreview) as missing:
        preview(billing_of(offline), CUSTOMER, from_ms(T0_MS + DAY_MS))

    assert missing.value.parameter == "at"
    assert "account plan sub_x" in missing.value.reason
    assert "is not mapped to a plan" in missing.value.reason
