"""Commitments and credit grants on bills, against hand-computed amounts.

The account `cus_1` is on plan `pro` from 2024-01-01, monthly, API calls at 0.10 USD (or
3 JPY). Bills are made as the billing timer makes them: a run in the middle of each month
(which also brings the month before up to date), each bill's latest version kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.alerts.rules import crossed
from streams.billing.bills import transition
from streams.billing.credits import units_within
from streams.billing.runs import run_account_plan
from streams.clock import from_ms
from streams.schemas.accounts import AccountPlan
from streams.schemas.balances import BalanceGrant
from streams.schemas.bill import Bill, BillStatus, LineItemType
from streams.schemas.catalog import AlertRule, Catalog, CatalogError, Commitment, PricingBand

D = Decimal
USAGE = LineItemType.USAGE
OVERAGE = LineItemType.OVERAGE_USAGE
FEE = LineItemType.COMMITMENT_FEE
CONSUMED = LineItemType.COMMITMENT_CONSUMED
BALANCE = LineItemType.BALANCE_CONSUMED
STANDING = LineItemType.STANDING_CHARGE


def t(month: int, day: int = 1, year: int = 2024) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def catalog(
    *,
    currency: str = "USD",
    unit_price: str = "0.10",
    commitment: dict[str, Any] | None = None,
    **plan: Any,
) -> Catalog:
    pricing: dict[str, Any] = {
        "aggregation": "calls",
        "pricingBands": [{"lowerLimit": 0, "unitPrice": unit_price}],
    }
    if "overage" in plan:
        pricing["overagePricingBands"] = plan.pop("overage")
    document: dict[str, Any] = {
        "meters": [{"code": "api", "dataFields": [{"category": "MEASURE", "code": "n"}]}],
        "aggregations": [
            {"code": "calls", "meter": "api", "targetField": "n", "aggregation": "SUM"}
        ],
        "plans": [{"code": "pro", "currency": currency, "pricings": [pricing], **plan}],
    }
    if commitment is not None:
        document["commitments"] = [
            {
                "code": "c2024",
                "account": "cus_1",
                "plan": "pro",
                "amount": "100.00",
                "startDate": "2024-01-01T00:00:00Z",
                "endDate": "2024-07-01T00:00:00Z",
                **commitment,
            }
        ]
    return Catalog.from_documents(document)


def grant(uid: str = "g1", amount: str = "25.00", **fields: Any) -> BalanceGrant:
    return BalanceGrant.model_validate(
        {
            "uid": uid,
            "account": "cus_1",
            "currency": "USD",
            "amount": amount,
            "startDate": "2024-01-01",
            "reason": "goodwill",
            "receivedAt": 0,
            **fields,
        }
    )


class Account:
    """One account plan billed month by month; `bills` holds each bill's latest version."""

    def __init__(
        self,
        live: Catalog,
        usage: Mapping[int, int],
        grants: Sequence[BalanceGrant] = (),
        **plan_fields: Any,
    ) -> None:
        self.catalog = live
        self.usage = dict(usage)  # month -> calls
        self.grants = list(grants)
        self.account_plan = AccountPlan.model_validate(
            {
                "id": "sub_1",
                "accountCode": "cus_1",
                "planCode": "pro",
                "status": "ACTIVE",
                "startDate": t(1),
                **plan_fields,
            }
        )
        self.bills: dict[str, Bill] = {}

    def values(
        self, account: str, functions: Mapping[str, object], start: int, end: int
    ) -> Mapping[str, Decimal | None]:
        calls = self.usage.get(from_ms(start).month)
        return {"calls": None if calls is None else D(calls)}

    def run(self, month: int, day: int = 15) -> list[Bill]:
        result = run_account_plan(
            account_plan=self.account_plan,
            account=None,
            catalog=self.catalog,
            previous=self.bills,
            usage=self.values,
            now=t(month, day),
            grants=lambda account: self.grants,
        )
        self.bills.update({bill.id: bill for bill in result.bills})
        return result.bills

    def months(self, last: int) -> list[Bill]:
        for month in range(1, last + 1):
            self.run(month)
        return sorted(self.bills.values(), key=lambda bill: bill.startDate)

    def lock(self, month: int) -> None:
        bill = self.bill(month)
        approved = transition(bill, BillStatus.APPROVED, t(month, 20))
        self.bills[bill.id] = transition(approved, BillStatus.LOCKED, t(month, 20))

    def bill(self, month: int) -> Bill:
        return next(b for b in self.bills.values() if b.startDate.month == month)


def lines(bill: Bill) -> list[tuple[str, Decimal | None, Decimal]]:
    return [(line.lineItemType.value, line.units, line.subtotal) for line in bill.lines]


def consumed(bills: Sequence[Bill], line_type: LineItemType = CONSUMED) -> Decimal:
    return -sum(
        (line.subtotal for bill in bills for line in bill.lines if line.lineItemType == line_type),
        D(0),
    )


# --- commitments ----------------------------------------------------------------------

COMMITMENT_CASES = [
    pytest.param(
        {},
        {1: 600, 2: 600, 3: 100},
        [
            # 60.00 of usage, all paid by the 100.00 commitment charged up front
            [("USAGE", D(600), D("60.00")), ("COMMITMENT_FEE", None, D("100.00")),
             ("COMMITMENT_CONSUMED", None, D("-60.00"))],
            # 40.00 left pays 400 calls; the other 200 are overage at the normal 0.10
            [("USAGE", D(400), D("40.00")), ("OVERAGE_USAGE", D(200), D("20.00")),
             ("COMMITMENT_CONSUMED", None, D("-40.00"))],
            # used up: every call is overage
            [("USAGE", D(0), D("0")), ("OVERAGE_USAGE", D(100), D("10.00")),
             ("COMMITMENT_CONSUMED", None, D("0"))],
        ],
        [D("100.00"), D("20.00"), D("10.00")],
        id="up-front-then-overage-at-normal-prices",
    ),
    pytest.param(
        {"overage": [{"lowerLimit": 0, "unitPrice": "0.15"}]},
        {1: 600, 2: 600},
        [
            [("USAGE", D(600), D("60.00")), ("COMMITMENT_FEE", None, D("100.00")),
             ("COMMITMENT_CONSUMED", None, D("-60.00"))],
            # 200 overage calls at the overage band's 0.15
            [("USAGE", D(400), D("40.00")), ("OVERAGE_USAGE", D(200), D("30.00")),
             ("COMMITMENT_CONSUMED", None, D("-40.00"))],
        ],
        [D("100.00"), D("30.00")],
        id="overage-pricing-bands",
    ),
    pytest.param(
        {"commitment": {"feeSchedule": "INSTALMENTS", "feeDates": [
            {"date": "2024-01-01T00:00:00Z", "amount": "33.34"},
            {"date": "2024-02-01T00:00:00Z", "amount": "33.33"},
            {"date": "2024-04-01T00:00:00Z", "amount": "33.33"},
        ]}},
        {1: 100, 2: 100, 3: 100},
        [
            [("USAGE", D(100), D("10.00")), ("COMMITMENT_FEE", None, D("33.34")),
             ("COMMITMENT_CONSUMED", None, D("-10.00"))],
            [("USAGE", D(100), D("10.00")), ("COMMITMENT_FEE", None, D("33.33")),
             ("COMMITMENT_CONSUMED", None, D("-10.00"))],
            # no instalment falls in March
            [("USAGE", D(100), D("10.00")), ("COMMITMENT_CONSUMED", None, D("-10.00"))],
        ],
        [D("33.34"), D("33.33"), D("0.00")],
        id="instalments",
    ),
    pytest.param(
        {"currency": "JPY", "unit_price": "3", "commitment": {"amount": "10000"},
         "overage": [{"lowerLimit": 0, "unitPrice": "4"}]},
        {1: 2000, 2: 2000},
        [
            [("USAGE", D(2000), D("6000")), ("COMMITMENT_FEE", None, D("10000")),
             ("COMMITMENT_CONSUMED", None, D("-6000"))],
            # 4000 JPY pays 1333.33… calls (to 12 places); 666.66… overage calls at 4 JPY
            # are 2666.67 JPY, 2667 in whole yen
            [("USAGE", D("1333.333333333333"), D("4000")),
             ("OVERAGE_USAGE", D("666.666666666667"), D("2667")),
             ("COMMITMENT_CONSUMED", None, D("-4000"))],
        ],
        [D("10000"), D("2667")],
        id="jpy-whole-yen",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "usage", "expected", "totals"), COMMITMENT_CASES)
def test_a_commitment_pays_usage_until_used_up_then_usage_is_overage(
    fields: dict[str, Any],
    usage: dict[int, int],
    expected: list[list[tuple[str, Decimal | None, Decimal]]],
    totals: list[Decimal],
) -> None:
    fields = {"commitment": {}, **fields}
    bills = Account(catalog(**fields), usage).months(len(expected))

    assert [lines(bill) for bill in bills] == expected
    assert [bill.total for bill in bills] == totals


def test_a_partial_period_commitment_pays_the_prorated_standing_charge_then_usage() -> None:
    # The account plan ends on January 16: 15 of January's 31 days, so the 31.00 standing
    # charge is 15.00. The 20.00 commitment pays it, then 5.00 of the 10.00 of usage.
    live = catalog(
        standingCharge="31.00",
        commitment={"amount": "20.00", "lineItemTypes": ["STANDING_CHARGE", "USAGE"]},
    )
    account = Account(live, {1: 100}, endDate=t(1, 16))

    [bill] = account.run(1, 10)

    assert lines(bill) == [
        ("STANDING_CHARGE", None, D("15.00")),
        ("USAGE", D(50), D("5.00")),
        ("OVERAGE_USAGE", D(50), D("5.00")),
        ("COMMITMENT_FEE", None, D("20.00")),
        ("COMMITMENT_CONSUMED", None, D("-20.00")),
    ]
    assert bill.total == D("25.00")


def test_a_recalculated_earlier_bill_re_flows_the_later_one_and_never_consumes_twice() -> None:
    account = Account(catalog(commitment={}), {1: 600, 2: 300})
    account.months(2)
    assert consumed(list(account.bills.values())) == D("90.00")

    account.usage[1] = 900  # late usage for January: 90.00, February has 10.00 left
    account.run(2, 16)
    bills = sorted(account.bills.values(), key=lambda bill: bill.startDate)

    assert [lines(bill)[-1] for bill in bills] == [
        ("COMMITMENT_CONSUMED", None, D("-90.00")),
        ("COMMITMENT_CONSUMED", None, D("-10.00")),
    ]
    assert lines(bills[1])[:2] == [
        ("USAGE", D(100), D("10.00")),
        ("OVERAGE_USAGE", D(200), D("20.00")),
    ]
    assert consumed(bills) == D("100.00")


def test_a_run_at_an_earlier_date_re_flows_every_later_stored_bill() -> None:
    account = Account(catalog(commitment={}), {1: 300, 2: 300, 3: 300})
    account.months(3)
    account.usage[1] = 1000  # January now takes the whole commitment

    account.run(1, 20)  # a run for January (`meterline bills run --at`)

    bills = sorted(account.bills.values(), key=lambda bill: bill.startDate)
    assert [bill.total for bill in bills] == [D("100.00"), D("30.00"), D("30.00")]
    assert consumed(bills) == D("100.00")


def test_a_locked_bill_keeps_its_consumption_and_later_bills_get_only_the_rest() -> None:
    account = Account(catalog(commitment={}), {1: 300, 2: 300})
    account.months(2)
    account.lock(2)
    account.usage[1] = 900  # February is locked with 30.00: January may take only 70.00

    account.run(2, 16)

    assert lines(account.bill(1))[-1] == ("COMMITMENT_CONSUMED", None, D("-70.00"))
    assert consumed(list(account.bills.values())) == D("100.00")


def test_a_bill_before_the_commitment_neither_pays_a_fee_nor_draws_on_it() -> None:
    live = catalog(commitment={"startDate": "2024-03-01T00:00:00Z"})
    bills = Account(live, {1: 100, 2: 100, 3: 100}).months(3)

    assert [bill.total for bill in bills] == [D("10.00"), D("10.00"), D("100.00")]
    assert [line.lineItemType for line in bills[0].lines] == [USAGE]


@pytest.mark.parametrize(
    ("commitment", "error"),
    [
        ({"plan": "nope"}, "commitments[c2024].plan: unknown plan 'nope'"),
        (
            {"amount": "10.001"},
            "commitments[c2024].amount: 10.001 is not a whole number of USD minor units",
        ),
        (
            {"feeSchedule": "INSTALMENTS", "feeDates": [
                {"date": "2024-01-01T00:00:00Z", "amount": "40"}]},
            "commitments[0]: Value error, feeDates: the amounts add up to 40, not 100.00",
        ),
        (
            {"endDate": "2023-01-01T00:00:00Z"},
            "commitments[0]: Value error, endDate must be after startDate",
        ),
        (
            {"lineItemTypes": ["COMMITMENT_FEE"]},
            "commitments[0]: Value error, lineItemTypes: a commitment's own fee cannot draw "
            "it down",
        ),
    ],
)  # fmt: skip
def test_a_bad_commitment_is_refused_naming_the_field_and_the_rule(
    commitment: dict[str, Any], error: str
) -> None:
    with pytest.raises(CatalogError) as refused:
        catalog(commitment=commitment)
    assert error in refused.value.errors


def test_a_plan_credit_application_order_must_name_both_sources_once() -> None:
    with pytest.raises(CatalogError) as refused:
        catalog(creditApplicationOrder=["BALANCE", "BALANCE"])
    assert refused.value.errors == [
        "plans[0].creditApplicationOrder: Value error, must name COMMITMENT and BALANCE, each once"
    ]


# --- balances -------------------------------------------------------------------------


def test_a_grant_pays_the_bill_after_the_commitment_and_what_is_left_carries_on() -> None:
    bills = Account(catalog(commitment={}), {1: 600, 2: 1000}, [grant(amount="125.00")]).months(2)

    # January: the 100.00 fee is all that is left to pay; February: 40.00 of overage
    assert lines(bills[0])[-1] == ("BALANCE_CONSUMED", None, D("-100.00"))
    assert lines(bills[1])[-1] == ("BALANCE_CONSUMED", None, D("-25.00"))
    assert bills[1].lines[-1].creditRemaining == D("0.00")
    assert [bill.total for bill in bills] == [D("0.00"), D("35.00")]


def test_balances_first_pay_usage_before_the_commitment_draws_down() -> None:
    live = catalog(commitment={}, creditApplicationOrder=["BALANCE", "COMMITMENT"])
    usage_only = grant(amount="30.00", lineItemTypes=["USAGE"])
    [january] = Account(live, {1: 600}, [usage_only]).months(1)

    assert lines(january) == [
        ("USAGE", D(600), D("60.00")),
        ("COMMITMENT_FEE", None, D("100.00")),
        ("BALANCE_CONSUMED", None, D("-30.00")),
        ("COMMITMENT_CONSUMED", None, D("-30.00")),
    ]
    assert january.lines[-1].creditRemaining == D("70.00")


def test_a_grant_never_takes_a_bill_below_zero_expires_and_needs_its_currency() -> None:
    grants = [
        grant("big", "500.00", expiryDate="2024-03-01"),
        grant("yen", "1000", currency="JPY"),
    ]
    bills = Account(catalog(), {1: 100, 2: 200, 3: 300}, grants).months(3)

    assert [bill.total for bill in bills] == [D("0.00"), D("0.00"), D("30.00")]
    assert [lines(bill)[-1] for bill in bills[:2]] == [
        ("BALANCE_CONSUMED", None, D("-10.00")),
        ("BALANCE_CONSUMED", None, D("-20.00")),
    ]
    assert bills[1].lines[-1].creditRemaining == D("470.00")
    assert [line.lineItemType for line in bills[2].lines] == [USAGE]


def test_a_grant_in_jpy_pays_whole_yen() -> None:
    yen = grant("yen", "1000", currency="JPY")
    [january] = Account(catalog(currency="JPY", unit_price="3"), {1: 500}, [yen]).months(1)

    assert lines(january) == [("USAGE", D(500), D("1500")), ("BALANCE_CONSUMED", None, D("-1000"))]
    assert january.total == D("500")


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (
            {"amount": "10.005"},
            "amount\n  Value error, 10.005 is not a whole number of USD minor units",
        ),
        ({"amount": "0"}, "amount"),
        ({"expiryDate": "2023-12-31"}, "expiryDate\n  Value error, must be after startDate"),
        ({"lineItemTypes": ["BALANCE_CONSUMED"]}, "lineItemTypes"),
        ({"reason": ""}, "reason"),
    ],
)
def test_a_bad_grant_is_refused_naming_the_field(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        grant(**fields)


# --- the commitment is never consumed more than its amount ------------------------------

STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("usage"), st.integers(1, 4), st.integers(0, 2000)),
        st.tuples(st.just("run"), st.integers(1, 4), st.integers(1, 28)),
        st.tuples(st.just("lock"), st.integers(1, 4), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(steps=STEPS, order=st.sampled_from([["COMMITMENT", "BALANCE"], ["BALANCE", "COMMITMENT"]]))
def test_a_commitment_is_never_consumed_beyond_its_amount_whatever_the_recalculations(
    steps: list[tuple[str, int, int]], order: list[str]
) -> None:
    live = catalog(commitment={}, creditApplicationOrder=order)
    account = Account(live, {}, [grant(amount="30.00", lineItemTypes=["USAGE"])])
    for action, month, value in steps:
        if action == "usage":
            account.usage[month] = value
        elif action == "run":
            account.run(month, value)
        elif any(
            b.startDate.month == month and b.status is not BillStatus.LOCKED
            for b in account.bills.values()
        ):
            account.lock(month)
    bills = list(account.bills.values())
    assert consumed(bills) <= D("100.00")
    assert consumed(bills, BALANCE) <= D("30.00")
    assert all(bill.total >= 0 for bill in bills)
    # what is left is read from the latest versions, never accumulated: a second run on
    # the same usage changes nothing
    if bills:
        latest = max(bill.startDate for bill in bills)
        account.run(latest.month, 28)
        before = dict(account.bills)
        assert account.run(latest.month, 28) == []
        assert account.bills == before


@pytest.mark.parametrize(
    ("bands", "cumulative", "units", "money", "within"),
    [
        ([(0, "0.10")], True, "600", "40", "400"),
        ([(0, "1"), (10, "0.5")], True, "30", "15", "20"),  # 10 at 1, then 10 at 0.5
        ([(0, "1"), (10, "0.5")], False, "30", "6", "12"),  # volume: every unit at 0.5
        ([(0, "3")], True, "2000", "4000", "1333.333333333333"),
        ([(0, "2")], True, "10", "100", "10"),
    ],
)
def test_units_within_is_what_the_money_pays_for_on_the_normal_bands(
    bands: list[tuple[int, str]], cumulative: bool, units: str, money: str, within: str
) -> None:
    priced = tuple(PricingBand(lowerLimit=D(lo), unitPrice=D(p)) for lo, p in bands)
    assert units_within(priced, cumulative, D(units), D(money)) == D(within)


# --- percent alert rules ------------------------------------------------------------------


def percent_rule(code: str, measure: str, threshold: str) -> AlertRule:
    return AlertRule.model_validate({"code": code, "measure": measure, "threshold": threshold})


def test_percent_rules_measure_the_commitment_and_the_grants_used_up_with_the_bill() -> None:
    # January: 60.00 of the 100.00 commitment (60 %); grant g1 pays 25.00 of the 100.00
    # fee and is used up (100 %); g2 starts in February
    credit = [grant("g1", "25.00"), grant("g2", "100.00", startDate="2024-02-01")]
    january, february = Account(catalog(commitment={}), {1: 600, 2: 300}, credit).months(2)
    rules = [
        percent_rule("commit_50", "COMMITMENT_CONSUMED_PERCENT", "50"),
        percent_rule("commit_90", "COMMITMENT_CONSUMED_PERCENT", "90"),
        percent_rule("credit_100", "BALANCE_CONSUMED_PERCENT", "100"),
    ]
    live = catalog(commitment={})

    fired = crossed(rules, [january], live, lambda *_: {}, t(1, 20))
    assert [(a.ruleCode, a.value) for a in fired] == [
        ("commit_50", D("60.0000")),
        ("credit_100", D("100.0000")),
    ]
    # February: 90.00 of 100.00 (90 %); the commitment pays all 30.00, nothing is left
    # for g2 to pay, so there is no balance to measure
    fired = crossed(rules, [february], live, lambda *_: {}, t(2, 20))
    assert [(a.ruleCode, a.value) for a in fired] == [
        ("commit_50", D("90.0000")),
        ("commit_90", D("90.0000")),
    ]


def test_a_percent_rule_is_at_most_100_and_names_no_aggregation() -> None:
    with pytest.raises(ValueError, match="threshold: a percent, at most 100"):
        percent_rule("r", "COMMITMENT_CONSUMED_PERCENT", "120")
    with pytest.raises(ValueError, match="only for measure AGGREGATION, not BALANCE_CONSUMED"):
        AlertRule.model_validate(
            {"code": "r", "measure": "BALANCE_CONSUMED_PERCENT", "threshold": 5, "aggregation": "x"}
        )


def test_every_usage_line_after_the_commitment_ran_out_is_overage() -> None:
    # calls at 0.10 and storage at 1.00 a GB; 40.00 of commitment: 400 of the 600 calls,
    # then the other 200 calls and all 30 GB are overage
    document: dict[str, Any] = {
        "meters": [{"code": "api", "dataFields": [{"category": "MEASURE", "code": "n"}]}],
        "aggregations": [
            {"code": "calls", "meter": "api", "targetField": "n", "aggregation": "SUM"},
            {"code": "gb", "meter": "api", "targetField": "n", "aggregation": "MAX"},
        ],
        "plans": [
            {
                "code": "pro",
                "currency": "USD",
                "pricings": [
                    {
                        "aggregation": "calls",
                        "pricingBands": [{"lowerLimit": 0, "unitPrice": "0.10"}],
                    },
                    {"aggregation": "gb", "pricingBands": [{"lowerLimit": 0, "unitPrice": "1.00"}]},
                ],
            }
        ],
        "commitments": [
            {
                "code": "c2024",
                "account": "cus_1",
                "plan": "pro",
                "amount": "40.00",
                "startDate": "2024-01-01T00:00:00Z",
                "endDate": "2024-07-01T00:00:00Z",
            }
        ],
    }
    account = Account(Catalog.from_documents(document), {})
    account.values = lambda *_: {"calls": D(600), "gb": D(30)}  # type: ignore[method-assign]

    [january] = account.run(1)

    assert lines(january) == [
        ("USAGE", D(400), D("40.00")),
        ("OVERAGE_USAGE", D(200), D("20.00")),
        ("USAGE", D(0), D("0")),
        ("OVERAGE_USAGE", D(30), D("30.00")),
        ("COMMITMENT_FEE", None, D("40.00")),
        ("COMMITMENT_CONSUMED", None, D("-40.00")),
    ]
    assert str(january.lines[0].units) == "400"  # written out, never as 4E+2


def commitment_of(account: str, code: str, amount: str) -> Commitment:
    """A commitment on `pro` over the first half of 2024."""
    return Commitment.model_validate(
        {
            "code": code,
            "account": account,
            "plan": "pro",
            "amount": amount,
            "startDate": "2024-01-01T00:00:00Z",
            "endDate": "2024-07-01T00:00:00Z",
        }
    )


def test_only_the_accounts_own_commitments_pay_and_a_new_catalog_is_used_at_once() -> None:
    """A catalog with a commitment per account (thousands of them): each bill draws on
    its own account's, and the next catalog's commitments replace the last one's."""
    others = {f"c{n}": commitment_of(f"cus_{n}", f"c{n}", f"{n}.00") for n in range(2, 2_000)}
    first = catalog().model_copy(update={"commitments": others})
    bill = Account(first, {1: 100}).months(1)[0]
    assert bill.total == D("10.00")  # cus_1 has no commitment: none of the others pays
    assert CONSUMED not in [line.lineItemType for line in bill.lines]

    own = commitment_of("cus_1", "c1", "4.00")
    second = catalog().model_copy(update={"commitments": {**others, "c1": own}})
    bill = Account(second, {1: 100}).months(1)[0]
    # c1's 4.00 pays 40 calls; the other 60 are overage
    assert [(line.lineItemType, line.commitmentCode, line.subtotal) for line in bill.lines] == [
        (USAGE, None, D("4.00")),
        (OVERAGE, None, D("6.00")),
        (FEE, "c1", D("4.00")),
        (CONSUMED, "c1", D("-4.00")),
    ]
