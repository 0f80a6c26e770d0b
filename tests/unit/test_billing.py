from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.billing.bills import BillLocked, LifecycleError, bill_id, build_bill, transition
from streams.billing.periods import Period
from streams.money import minor_units, round_money
from streams.schemas.accounts import Account, AccountPlan
from streams.schemas.bill import Bill, BillReason, BillStatus, LineItemType
from streams.schemas.catalog import Aggregation, Plan

D = Decimal
APRIL = Period(datetime(2024, 4, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC))
NOW = datetime(2024, 4, 20, tzinfo=UTC)
LATER = datetime(2024, 4, 21, tzinfo=UTC)


def t(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


AGGREGATIONS = {
    agg.code: agg
    for agg in (
        Aggregation.model_validate(
            {"code": "calls", "name": "API calls", "meter": "api", "targetField": "n",
             "aggregation": "SUM"}
        ),
        Aggregation.model_validate(
            {"code": "gb", "meter": "storage", "targetField": "bytes", "aggregation": "MAX",
             "quantityPerUnit": 1000, "rounding": "UP"}
        ),
    )
}  # fmt: skip


def plan(**overrides: Any) -> Plan:
    fields: dict[str, Any] = {
        "code": "pro",
        "currency": "USD",
        "standingCharge": "30.00",
        "pricings": [
            {"aggregation": "calls", "pricingBands": [{"lowerLimit": 0, "unitPrice": "0.10"}]},
            {
                "aggregation": "gb",
                "cumulative": False,
                "description": "Storage",
                "pricingBands": [
                    {"lowerLimit": 0, "unitPrice": "2.00"},
                    {"lowerLimit": 10, "unitPrice": "1.50", "fixedPrice": "5"},
                ],
            },
        ],
    }
    return Plan.model_validate({**fields, **overrides})


def per_call(unit_price: str) -> dict[str, Any]:
    return {"aggregation": "calls", "pricingBands": [{"lowerLimit": 0, "unitPrice": unit_price}]}


def account_plan(**overrides: Any) -> AccountPlan:
    fields: dict[str, Any] = {
        "id": "sub_1",
        "accountCode": "cus_1",
        "planCode": "pro",
        "status": "ACTIVE",
        "startDate": t(2024, 1, 1),
        "stripeSubscriptionId": "sub_1",
    }
    return AccountPlan.model_validate({**fields, **overrides})


def bill(
    usage: Mapping[str, Decimal | None] | None = None,
    *,
    the_plan: Plan | None = None,
    the_account_plan: AccountPlan | None = None,
    previous: Bill | None = None,
    now: datetime = NOW,
) -> Bill | None:
    return build_bill(
        account_plan=the_account_plan or account_plan(),
        plan=the_plan or plan(),
        aggregations=AGGREGATIONS,
        usage=usage if usage is not None else {},
        period=APRIL,
        previous=previous,
        now=now,
        account=Account(code="cus_1", stripeCustomerId="cus_1"),
    )


def first_bill(usage: Mapping[str, Decimal | None] | None = None, **kwargs: Any) -> Bill:
    result = bill(usage, **kwargs)
    assert result is not None
    return result


def subtotals(b: Bill) -> dict[str, Decimal]:
    return {line.id: line.subtotal for line in b.lines}


def test_a_bill_has_a_standing_charge_and_one_usage_line_per_pricing() -> None:
    b = first_bill({"calls": D(120), "gb": D(12_500)})
    # calls: 120 x 0.10; gb: 12,500 / 1000 rounded up = 13 units, volume band 2: 13 x 1.50 + 5
    assert subtotals(b) == {
        "STANDING_CHARGE": D("30.00"),
        "USAGE:calls": D("12.00"),
        "USAGE:gb": D("24.50"),
    }
    assert b.total == D("66.50")
    gb = b.lines[2]
    assert (gb.lineItemType, gb.description, gb.quantity, gb.units, gb.unitPrice) == (
        LineItemType.USAGE, "Storage", D(12_500), D(13), D("1.50")
    )  # fmt: skip
    assert [(u.lowerLimit, u.units) for u in gb.usagePerPricingBand] == [(D(10), D(13))]


def test_a_new_bill_is_version_one_pending_with_deterministic_id_and_stripe_ids() -> None:
    b = first_bill()
    assert (b.version, b.status, b.reason) == (1, BillStatus.PENDING, BillReason.CREATED)
    assert b.id == bill_id("sub_1", APRIL.start) == first_bill({"calls": D(5)}).id
    assert b.id != bill_id("sub_1", APRIL.end) and b.id != bill_id("sub_2", APRIL.start)
    assert (b.startDate, b.endDate, b.generatedAt, b.statusChangedAt) == (
        APRIL.start, APRIL.end, NOW, NOW
    )  # fmt: skip
    assert (b.stripeCustomerId, b.stripeSubscriptionId) == ("cus_1", "sub_1")


def test_no_usage_prices_the_default_value_and_keeps_the_line() -> None:
    b = first_bill({"calls": None})
    assert subtotals(b)["USAGE:calls"] == D("0.00")
    with_default = {
        **AGGREGATIONS,
        "calls": AGGREGATIONS["calls"].model_copy(update={"defaultValue": D(7)}),
    }
    defaulted = build_bill(
        account_plan=account_plan(), plan=plan(), aggregations=with_default, usage={},
        period=APRIL, previous=None, now=NOW,
    )  # fmt: skip
    assert defaulted is not None
    assert subtotals(defaulted)["USAGE:calls"] == D("0.70")
    assert defaulted.lines[1].quantity == D(7)


@pytest.mark.parametrize(
    ("overrides", "charge", "service"),
    [
        ({}, "30.00", (t(2024, 4, 1), t(2024, 5, 1))),
        ({"startDate": t(2024, 4, 16)}, "15.00", (t(2024, 4, 16), t(2024, 5, 1))),
        ({"endDate": t(2024, 4, 11)}, "10.00", (t(2024, 4, 1), t(2024, 4, 11))),
        ({"startDate": t(2024, 4, 11), "endDate": t(2024, 4, 21)}, "10.00",
         (t(2024, 4, 11), t(2024, 4, 21))),
        ({"startDate": t(2024, 4, 30, 12)}, "0.50", (t(2024, 4, 30, 12), t(2024, 5, 1))),
    ],
)  # fmt: skip
def test_the_standing_charge_is_prorated_by_the_time_the_account_plan_covers(
    overrides: dict[str, Any], charge: str, service: tuple[datetime, datetime]
) -> None:
    b = first_bill(the_account_plan=account_plan(**overrides))
    line = b.lines[0]
    assert line.subtotal == D(charge)
    assert (line.servicePeriodStartDate, line.servicePeriodEndDate) == service
    assert all((u.servicePeriodStartDate, u.servicePeriodEndDate) == service for u in b.lines)


def test_a_prorated_standing_charge_is_rounded_half_up_once() -> None:
    b = first_bill(
        the_plan=plan(standingCharge="10.00"), the_account_plan=account_plan(endDate=t(2024, 4, 11))
    )
    assert b.lines[0].subtotal == D("3.33")  # 10.00 / 3 = 3.333...


def test_in_advance_only_labels_the_standing_charge() -> None:
    arrears = first_bill(the_plan=plan(standingChargeDescription="Platform fee"))
    advance = first_bill(
        the_plan=plan(standingChargeDescription="Platform fee", standingChargeBilledInAdvance=True)
    )
    assert arrears.lines[0].description == "Platform fee"
    assert advance.lines[0].description == "Platform fee (in advance)"
    assert advance.lines[0].subtotal == arrears.lines[0].subtotal


def test_no_standing_charge_line_when_the_plan_has_none() -> None:
    assert "STANDING_CHARGE" not in subtotals(first_bill(the_plan=plan(standingCharge="0")))


@pytest.mark.parametrize(
    ("usage", "overrides", "minimum_line"),
    [
        ({"calls": D(200)}, {}, "30.00"),  # usage 20.00 < 50.00
        ({"calls": D(500)}, {}, None),  # usage exactly 50.00
        ({"calls": D(600)}, {}, None),
        ({}, {}, "50.00"),
        ({"calls": D(200)}, {"startDate": t(2024, 4, 16)}, "5.00"),  # minimum prorated to 25.00
    ],
)
def test_minimum_spend_tops_up_the_usage_lines_to_the_minimum(
    usage: dict[str, Decimal], overrides: dict[str, Any], minimum_line: str | None
) -> None:
    b = first_bill(
        usage, the_plan=plan(minimumSpend="50.00"), the_account_plan=account_plan(**overrides)
    )
    assert subtotals(b).get("MINIMUM_SPEND") == (None if minimum_line is None else D(minimum_line))
    if minimum_line is not None:
        assert b.lines[-1].lineItemType is LineItemType.MINIMUM_SPEND


def test_zero_decimal_currency_rounds_to_whole_yen() -> None:
    yen = plan(currency="JPY", standingCharge="1000", pricings=[per_call("0.5")])
    b = first_bill(
        {"calls": D(3)}, the_plan=yen, the_account_plan=account_plan(endDate=t(2024, 4, 11))
    )
    assert subtotals(b) == {"STANDING_CHARGE": D(333), "USAGE:calls": D(2)}  # 333.33, 1.5
    assert b.total == D(335)
    assert str(b.total) == "335"


def test_three_decimal_currency_rounds_to_fils() -> None:
    dinar = plan(currency="KWD", standingCharge="1.000", pricings=[per_call("0.0125")])
    b = first_bill(
        {"calls": D(3)}, the_plan=dinar, the_account_plan=account_plan(endDate=t(2024, 4, 11))
    )
    assert subtotals(b) == {"STANDING_CHARGE": D("0.333"), "USAGE:calls": D("0.038")}
    assert str(b.total) == "0.371"


def test_the_bill_round_trips_through_json_exactly() -> None:
    b = first_bill({"calls": D("12.345"), "gb": D(999)})
    wire = b.model_dump_json()
    assert '"total":"' in wire  # money is a JSON string, never a float
    again = Bill.model_validate_json(wire)
    assert again == b
    assert [str(line.subtotal) for line in again.lines] == [str(line.subtotal) for line in b.lines]


def test_inputs_that_do_not_belong_together_are_refused() -> None:
    with pytest.raises(ValueError, match="plan: account plan sub_1 is on plan 'pro'"):
        bill(the_plan=plan(code="basic"))
    with pytest.raises(ValueError, match="period: account plan sub_1 does not cover"):
        bill(the_account_plan=account_plan(startDate=t(2024, 5, 1)))
    with pytest.raises(ValueError, match="is not in the catalog"):
        build_bill(
            account_plan=account_plan(), plan=plan(), aggregations={}, usage={},
            period=APRIL, previous=None, now=NOW,
        )  # fmt: skip
    other_period = first_bill()
    may = Period(APRIL.end, t(2024, 6, 1))
    with pytest.raises(ValueError, match="previous: bill"):
        build_bill(
            account_plan=account_plan(), plan=plan(), aggregations=AGGREGATIONS, usage={},
            period=may, previous=other_period, now=NOW,
        )  # fmt: skip


# ---- regeneration ------------------------------------------------------------------------


def test_regenerating_an_unchanged_bill_returns_none() -> None:
    first = first_bill({"calls": D(10)})
    assert bill({"calls": D(10)}, previous=first, now=LATER) is None
    assert bill({"calls": D("10.0")}, previous=first, now=LATER) is None


def test_regenerating_a_changed_bill_emits_the_next_pending_version() -> None:
    first = first_bill({"calls": D(10)})
    second = bill({"calls": D(11)}, previous=first, now=LATER)
    assert second is not None
    assert (second.id, second.version, second.status, second.reason) == (
        first.id, 2, BillStatus.PENDING, BillReason.RECALCULATED
    )  # fmt: skip
    assert (second.generatedAt, second.statusChangedAt) == (LATER, NOW)
    assert second.total == first.total + D("0.10")


def test_a_changed_approved_bill_goes_back_to_pending() -> None:
    approved = transition(first_bill({"calls": D(10)}), BillStatus.APPROVED, NOW)
    reopened = bill({"calls": D(11)}, previous=approved, now=LATER)
    assert reopened is not None
    assert (reopened.version, reopened.status, reopened.statusChangedAt) == (
        3, BillStatus.PENDING, LATER
    )  # fmt: skip


def test_an_unchanged_approved_bill_stays_approved() -> None:
    approved = transition(first_bill({"calls": D(10)}), BillStatus.APPROVED, NOW)
    assert bill({"calls": D(10)}, previous=approved, now=LATER) is None


def test_a_locked_bill_is_never_regenerated() -> None:
    locked = transition(
        transition(first_bill({"calls": D(10)}), BillStatus.APPROVED, NOW), BillStatus.LOCKED, NOW
    )
    with pytest.raises(BillLocked) as caught:
        bill({"calls": D(11)}, previous=locked, now=LATER)
    assert caught.value.bill_id == locked.id
    assert "LOCKED" in caught.value.reason


# ---- lifecycle ---------------------------------------------------------------------------


def in_status(status: BillStatus) -> Bill:
    return first_bill().model_copy(update={"status": status})


@pytest.mark.parametrize(
    ("current", "target"),
    [(BillStatus.PENDING, BillStatus.APPROVED), (BillStatus.APPROVED, BillStatus.LOCKED)],
)
def test_allowed_transitions_bump_the_version(current: BillStatus, target: BillStatus) -> None:
    before = in_status(current)
    after = transition(before, target, LATER)
    assert (after.status, after.version, after.statusChangedAt, after.reason) == (
        target, before.version + 1, LATER, BillReason.STATUS
    )  # fmt: skip
    assert (after.lines, after.total, after.generatedAt) == (before.lines, before.total, NOW)


@pytest.mark.parametrize(
    ("current", "target", "reason"),
    [
        (BillStatus.PENDING, BillStatus.LOCKED, "approve it first"),
        (BillStatus.APPROVED, BillStatus.PENDING, "only a recalculation reopens"),
        (BillStatus.LOCKED, BillStatus.PENDING, "a locked bill never changes"),
        (BillStatus.LOCKED, BillStatus.APPROVED, "a locked bill never changes"),
    ],
)
def test_forbidden_transitions_raise_with_a_reason(
    current: BillStatus, target: BillStatus, reason: str
) -> None:
    with pytest.raises(LifecycleError, match=reason) as caught:
        transition(in_status(current), target, LATER)
    assert caught.value.bill_id == in_status(current).id


@pytest.mark.parametrize("status", list(BillStatus))
def test_a_transition_to_the_current_status_changes_nothing(status: BillStatus) -> None:
    before = in_status(status)
    assert transition(before, status, LATER) is before


def test_a_transition_for_a_version_that_was_recalculated_since_is_refused() -> None:
    first = first_bill({"calls": D(10)})
    second = bill({"calls": D(11)}, previous=first, now=LATER)
    assert second is not None
    with pytest.raises(LifecycleError, match="expected version 1 but the bill is at version 2"):
        transition(second, BillStatus.APPROVED, LATER, expected_version=1)
    assert transition(second, BillStatus.APPROVED, LATER, expected_version=2).version == 3


# ---- properties --------------------------------------------------------------------------

amounts = st.decimals(min_value=0, max_value=10_000, places=4)


@settings(max_examples=60)
@given(
    currency=st.sampled_from(["USD", "JPY", "KWD"]),
    standing=amounts,
    minimum=amounts,
    calls=st.one_of(st.none(), st.decimals(min_value=0, max_value=10**6, places=3)),
    gb=st.one_of(st.none(), st.decimals(min_value=0, max_value=10**7, places=0)),
    start_day=st.integers(1, 30),
)
def test_the_total_is_the_sum_of_line_subtotals_each_in_minor_units(
    currency: str,
    standing: Decimal,
    minimum: Decimal,
    calls: Decimal | None,
    gb: Decimal | None,
    start_day: int,
) -> None:
    b = first_bill(
        {"calls": calls, "gb": gb},
        the_plan=plan(currency=currency, standingCharge=standing, minimumSpend=minimum),
        the_account_plan=account_plan(startDate=t(2024, 4, start_day)),
    )
    assert b.total == sum((line.subtotal for line in b.lines), D(0))
    quantum = D(1).scaleb(-minor_units(currency))
    assert all(line.subtotal == line.subtotal.quantize(quantum) for line in b.lines)
    usage = sum(
        (line.subtotal for line in b.lines if line.lineItemType is LineItemType.USAGE), D(0)
    )
    # April has 30 days; the plan covers the days from start_day on.
    prorated_minimum = round_money(minimum * (31 - start_day) / 30, currency)
    assert usage + subtotals(b).get("MINIMUM_SPEND", D(0)) == max(usage, prorated_minimum)
