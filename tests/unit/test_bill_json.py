"""`bill_json`: the bytes `Bill.model_dump_json` writes, for any bill (a bill run writes
every bill with `bill_json`; consumers and the stored bills read them as pydantic
would have written them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.schemas.bill import (
    BandUsage,
    Bill,
    BillLine,
    BillReason,
    BillStatus,
    LineItemType,
    bill_json,
)

# Decimals as they occur and as they may: exponents, negative zero, trailing zeros
decimals = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.sampled_from([Decimal("1E+4"), Decimal("-0"), Decimal("0E-8"), Decimal("10.000")]),
)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
moments = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=offsets
)
texts = st.text(max_size=12)  # any unicode: quotes, escapes, emoji, control characters
optional_text = st.none() | texts
bands = st.builds(
    BandUsage,
    lowerLimit=decimals,
    upperLimit=st.none() | decimals,
    units=decimals,
    unitPrice=decimals,
    fixedPrice=decimals,
    subtotal=decimals,
)
lines = st.builds(
    BillLine,
    id=texts,
    lineItemType=st.sampled_from(LineItemType),
    description=texts,
    aggregationCode=optional_text,
    compoundAggregationCode=optional_text,
    counterCode=optional_text,
    commitmentCode=optional_text,
    balanceId=optional_text,
    creditAmount=st.none() | decimals,
    creditRemaining=st.none() | decimals,
    segment=st.none() | st.dictionaries(texts, texts, max_size=3),
    quantity=st.none() | decimals,
    units=st.none() | decimals,
    unitPrice=st.none() | decimals,
    subtotal=decimals,
    usagePerPricingBand=st.lists(bands, max_size=3).map(tuple),
    servicePeriodStartDate=moments,
    servicePeriodEndDate=moments,
)


@st.composite
def bills(draw: st.DrawFn) -> Bill:
    chosen = draw(st.lists(lines, max_size=4, unique_by=lambda line: line.id))
    start = draw(moments)
    return Bill(
        id=draw(texts),
        version=draw(st.integers(1, 2**40)),
        accountCode=draw(texts),
        accountPlanId=draw(texts),
        planCode=draw(texts),
        currency=draw(st.sampled_from(["USD", "EUR", "JPY"])),
        status=draw(st.sampled_from(BillStatus)),
        startDate=start,
        endDate=start + draw(st.timedeltas(timedelta(microseconds=1), timedelta(days=400))),
        lines=tuple(chosen),
        total=sum((line.subtotal for line in chosen), Decimal(0)),
        generatedAt=draw(moments),
        statusChangedAt=draw(moments),
        reason=draw(st.sampled_from(BillReason)),
        stripeCustomerId=draw(optional_text),
        stripeSubscriptionId=draw(optional_text),
    )


@given(bills())
def test_bill_json_writes_the_bytes_pydantic_writes_for_any_bill(bill: Bill) -> None:
    written = bill_json(bill)
    assert written == bill.model_dump_json().encode()
    assert Bill.model_validate_json(written) == bill


def test_a_bill_holding_what_no_bill_holds_is_refused_naming_its_type() -> None:
    line = BillLine.model_construct(
        id="x", lineItemType=LineItemType.USAGE, description="x", subtotal=object()
    )
    bill = Bill.model_construct(id="b", lines=(line,))
    with pytest.raises(orjson.JSONEncodeError, match="not JSON serializable: object"):
        bill_json(bill)


def test_a_line_the_builder_makes_with_an_int_for_money_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="subtotal\n  Input should be an instance of Decimal"):
        BillLine.strict(
            id="STANDING_CHARGE",
            lineItemType=LineItemType.STANDING_CHARGE,
            description="Standing charge",
            subtotal=10,
            servicePeriodStartDate=datetime(2024, 4, 1, tzinfo=UTC),
            servicePeriodEndDate=datetime(2024, 5, 1, tzinfo=UTC),
        )
