"""Counter pricing on bills (seats), against hand-computed amounts.

April 2024 has 30 days: an adjustment at 00:00 on April 16 covers 15/30 of the period,
one on April 21 10/30, one on April 11 20/30.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from streams.billing.bills import Extras, build_bill
from streams.billing.counters import CountChange
from streams.billing.periods import Period
from streams.schemas.accounts import AccountPlan
from streams.schemas.bill import Bill, LineItemType
from streams.schemas.catalog import Catalog, CatalogError

D = Decimal
APRIL = Period(datetime(2024, 4, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC))
NOW = datetime(2024, 4, 20, tzinfo=UTC)
RUNNING = LineItemType.COUNTER_RUNNING_TOTAL_CHARGE
DEBIT = LineItemType.COUNTER_ADJUSTMENT_DEBIT
CREDIT = LineItemType.COUNTER_ADJUSTMENT_CREDIT


def april(day: int) -> datetime:
    return datetime(2024, 4, day, tzinfo=UTC)


def seats_bill(
    history: list[tuple[datetime, int]],
    *,
    bands: list[dict[str, Any]] | None = None,
    currency: str = "USD",
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC),
    end: datetime | None = None,
    **pricing: Any,
) -> Bill:
    catalog = Catalog.from_documents(
        {
            "counters": [{"code": "seats", "name": "Seats", "unit": "seats"}],
            "plans": [
                {
                    "code": "team",
                    "currency": currency,
                    "counterPricings": [
                        {
                            "counter": "seats",
                            "pricingBands": bands or [{"lowerLimit": 0, "unitPrice": "2.00"}],
                            **pricing,
                        }
                    ],
                }
            ],
        }
    )
    bill = build_bill(
        account_plan=AccountPlan(
            id="sub_1",
            accountCode="cus_1",
            planCode="team",
            status="ACTIVE",  # type: ignore[arg-type]
            startDate=start,
            endDate=end,
        ),
        plan=catalog.plans["team"],
        aggregations={},
        usage={},
        period=APRIL,
        previous=None,
        now=NOW,
        extras=Extras(
            counters=catalog.counters,
            counts={"seats": [CountChange(at, value) for at, value in history]},
        ),
    )
    assert bill is not None
    return bill


def lines(bill: Bill) -> list[tuple[LineItemType, Decimal | None, Decimal]]:
    return [(line.lineItemType, line.quantity, line.subtotal) for line in bill.lines]


TEN_SINCE_MARCH = (datetime(2024, 3, 3, tzinfo=UTC), 10)

# (history, pricing options, expected lines (type, quantity, subtotal), total)
CASES = [
    pytest.param(
        [TEN_SINCE_MARCH], {}, [(RUNNING, D(10), D("20.00"))], D("20.00"),
        id="10 seats all period: 10 x 2.00",
    ),
    pytest.param(
        [TEN_SINCE_MARCH, (april(16), 15)], {},
        [(RUNNING, D(10), D("20.00")), (DEBIT, D(5), D("5.00"))], D("25.00"),
        id="5 more on day 16: 5 x 2.00 x 15/30",
    ),
    pytest.param(
        [TEN_SINCE_MARCH, (april(21), 4)], {},
        [(RUNNING, D(10), D("20.00")), (CREDIT, D(-6), D("-4.00"))], D("16.00"),
        id="6 fewer on day 21: -6 x 2.00 x 10/30",
    ),
    pytest.param(
        [TEN_SINCE_MARCH, (april(11), 12), (april(21), 7)], {},
        [(RUNNING, D(10), D("20.00")), (DEBIT, D(2), D("2.67")), (CREDIT, D(-5), D("-3.33"))],
        D("19.34"),
        id="up 2 on day 11, down 5 on day 21: each line rounded once",
    ),
    pytest.param(
        [TEN_SINCE_MARCH, (april(16), 15), (april(21), 6)],
        {"pricingBands": [{"lowerLimit": 0, "unitPrice": "4.00"}]},
        [(RUNNING, D(10), D("40.00")), (DEBIT, D(5), D("10.00")), (CREDIT, D(-9), D("-12.00"))],
        D("38.00"),
        id="the README's worked example at 4.00 a seat",
    ),
    pytest.param(
        [TEN_SINCE_MARCH, (april(16), 15)], {"proRateAdjustmentDebit": False},
        [(RUNNING, D(10), D("20.00")), (DEBIT, D(5), D("10.00"))], D("30.00"),
        id="debit not prorated: the whole period's 5 x 2.00",
    ),
    pytest.param(
        [TEN_SINCE_MARCH, (april(16), 10)], {},
        [(RUNNING, D(10), D("20.00"))], D("20.00"),
        id="an adjustment to the same count is no line",
    ),
    pytest.param(
        [], {}, [(RUNNING, D(0), D("0.00"))], D("0.00"),
        id="no adjustment yet: a zero running total",
    ),
    pytest.param(
        [TEN_SINCE_MARCH, (datetime(2024, 5, 2, tzinfo=UTC), 99)], {},
        [(RUNNING, D(10), D("20.00"))], D("20.00"),
        id="an adjustment after the period belongs to the next bill",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("history", "options", "expected", "total"), CASES)
def test_a_seat_counter_bills_its_running_total_and_prorated_adjustments(
    history: list[tuple[datetime, int]],
    options: dict[str, Any],
    expected: list[tuple[LineItemType, Decimal, Decimal]],
    total: Decimal,
) -> None:
    options = dict(options)
    bill = seats_bill(history, bands=options.pop("pricingBands", None), **options)
    assert lines(bill) == expected
    assert bill.total == total


def test_an_account_plan_starting_mid_period_prorates_the_running_total() -> None:
    # 10 seats x 2.00 x 20/30 = 13.333... -> 13.33; the count is taken at the plan's start
    bill = seats_bill([TEN_SINCE_MARCH, (april(5), 3)], start=april(11))
    assert lines(bill) == [(RUNNING, D(3), D("4.00"))]
    bill = seats_bill([TEN_SINCE_MARCH], start=april(11))
    assert lines(bill) == [(RUNNING, D(10), D("13.33"))]
    assert bill.lines[0].servicePeriodStartDate == april(11)


def test_counter_credits_never_take_the_bill_below_zero() -> None:
    # running total 10 x 2.00 x 15/30 = 10.00; the credit not prorated would be -20.00
    bill = seats_bill(
        [TEN_SINCE_MARCH, (april(21), 0)], start=april(16), proRateAdjustmentCredit=False
    )
    assert lines(bill) == [(RUNNING, D(10), D("10.00")), (CREDIT, D(-10), D("-10.00"))]
    assert bill.total == D("0.00")


def test_a_tiered_counter_debits_the_price_difference_of_the_two_counts() -> None:
    bands = [{"lowerLimit": 0, "unitPrice": "5.00"}, {"lowerLimit": 10, "unitPrice": "3.00"}]
    # 8 seats = 40.00; 12 seats = 10 x 5.00 + 2 x 3.00 = 56.00; (56 - 40) x 15/30 = 8.00
    bill = seats_bill([(datetime(2024, 3, 1, tzinfo=UTC), 8), (april(16), 12)], bands=bands)
    assert lines(bill) == [(RUNNING, D(8), D("40.00")), (DEBIT, D(4), D("8.00"))]
    assert [(b.units, b.subtotal) for b in bill.lines[0].usagePerPricingBand] == [
        (D(8), D("40.00"))
    ]
    debit = bill.lines[1]
    assert (debit.units, debit.description) == (D(12), "Seats: 8 → 12 seats")
    assert (debit.servicePeriodStartDate, debit.servicePeriodEndDate) == (april(16), APRIL.end)


def test_more_seats_at_a_lower_volume_price_is_a_credit() -> None:
    # volume: 4 seats x 10.00 = 40.00; 5 seats x 7.00 = 35.00; -5.00 x 15/30 = -2.50
    bands = [{"lowerLimit": 0, "unitPrice": "10.00"}, {"lowerLimit": 4, "unitPrice": "7.00"}]
    bill = seats_bill(
        [(datetime(2024, 3, 1, tzinfo=UTC), 4), (april(16), 5)], bands=bands, cumulative=False
    )
    assert lines(bill) == [(RUNNING, D(4), D("40.00")), (CREDIT, D(1), D("-2.50"))]


def test_seats_on_a_jpy_plan_are_rounded_to_whole_yen() -> None:
    # 3 seats x 1,000 = 3,000 JPY; one more on day 11: 1,000 x 20/30 = 666.67 -> 667 JPY
    bill = seats_bill(
        [(datetime(2024, 3, 1, tzinfo=UTC), 3), (april(11), 4)],
        bands=[{"lowerLimit": 0, "unitPrice": "1000"}],
        currency="JPY",
    )
    assert lines(bill) == [(RUNNING, D(3), D(3000)), (DEBIT, D(1), D(667))]
    assert bill.total == D(3667)


def test_adjustment_line_ids_are_stable_whether_debit_or_credit() -> None:
    up = seats_bill([TEN_SINCE_MARCH, (april(16), 15)])
    down = seats_bill([TEN_SINCE_MARCH, (april(16), 5)])
    assert (
        [line.id for line in up.lines]
        == [line.id for line in down.lines]
        == [
            "COUNTER_RUNNING_TOTAL_CHARGE:seats",
            "COUNTER_ADJUSTMENT:seats:2024-04-16T00:00:00+00:00",
        ]
    )


def test_catalog_refuses_unknown_counters_and_an_unpriced_stripe_quantity_counter() -> None:
    with pytest.raises(CatalogError) as caught:
        Catalog.from_documents(
            {
                "counters": [{"code": "seats"}],
                "plans": [
                    {
                        "code": "team",
                        "currency": "USD",
                        "counterPricings": [
                            {"counter": "licences", "pricingBands": [{"lowerLimit": 0}]}
                        ],
                        "stripeQuantityCounter": "seats",
                    },
                    {
                        "code": "twice",
                        "currency": "USD",
                        "counterPricings": [
                            {"counter": "seats", "pricingBands": [{"lowerLimit": 0}]},
                            {"counter": "seats", "pricingBands": [{"lowerLimit": 1}]},
                        ],
                    },
                ],
            }
        )
    errors = "\n".join(caught.value.errors)
    assert "plans[team].counterPricings[0].counter: unknown counter 'licences'" in errors
    assert (
        "plans[team].stripeQuantityCounter: counter 'seats' is not priced by this plan's "
        "counterPricings" in errors
    )
    assert "plans[1].counterPricings[1].pricingBands" in errors
    assert "first pricing band must have lowerLimit 0" in errors
