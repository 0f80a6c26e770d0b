"""Balances: credit grants on an account (m3ter's Balance), drawn down by its bills.

A grant gives an account `amount` of money in `currency` from `startDate` until
`expiryDate` (exclusive; none: it never expires) for the charges of `lineItemTypes`
(every charge when empty), for a `reason`. `uid` is the caller's id: the same grant sent
again is recorded once, and a uid names one grant (another body with it is refused).
Bills consume grants as BALANCE_CONSUMED lines (`streams.billing.credits`).
Money travels as a JSON string ("25.00") and must be a whole number of the currency's
minor units.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from streams.money import round_money
from streams.schemas.catalog import CURRENCY_PATTERN, ChargeType, Frozen
from streams.schemas.counters import AdjustmentDate, Identifier

MAX_AMOUNT = Decimal(10) ** 15


class BalanceGrantRequest(Frozen):
    """The body of `POST /organizations/{orgId}/balances`."""

    uid: Identifier = Field(description="The caller's id: a grant sent again counts once")
    account: Identifier = Field(description="Code of the account")
    currency: Annotated[str, Field(pattern=CURRENCY_PATTERN)] = Field(
        description="ISO 4217, upper case; only bills in this currency consume it"
    )
    amount: Annotated[Decimal, Field(gt=0, lt=MAX_AMOUNT)] = Field(
        description="Money granted, a whole number of the currency's minor units"
    )
    startDate: AdjustmentDate = Field(description="Bills of periods ending after it use it")
    expiryDate: AdjustmentDate | None = Field(
        default=None, description="Bills of periods starting from it no longer use it"
    )
    lineItemTypes: tuple[ChargeType, ...] = Field(
        default=(), description="The charges it pays; every charge when empty"
    )
    reason: str = Field(min_length=1, max_length=500, description="Why it was granted")
    description: str | None = Field(default=None, max_length=200, description="Bill line text")

    @field_validator("amount")
    @classmethod
    def _whole_minor_units(cls, amount: Decimal, info: ValidationInfo) -> Decimal:
        currency = info.data.get("currency")
        if currency is not None and round_money(amount, currency) != amount:
            raise ValueError(f"{amount} is not a whole number of {currency} minor units")
        return amount

    @field_validator("expiryDate")
    @classmethod
    def _after_start(cls, expiry: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("startDate")
        if expiry is not None and start is not None and expiry <= start:
            raise ValueError("must be after startDate")
        return expiry


class BalanceGrant(BalanceGrantRequest):
    """A `balances` record: the grant, when the edge received it, and where from."""

    receivedAt: int = Field(ge=0, description="Epoch ms the edge saw it")
    source: Literal["api"] = "api"

    def same_grant(self, other: BalanceGrant) -> bool:
        """The same grant, whenever and however often it was sent."""
        skip = {"receivedAt", "source"}
        return self.model_dump(exclude=skip) == other.model_dump(exclude=skip)


class Balance(Frozen):
    """A grant and what is left of it (`GET /organizations/{orgId}/balances`)."""

    grant: BalanceGrant
    consumed: Decimal = Field(description="What the account's latest bills consumed of it")
    remaining: Decimal = Field(description="amount - consumed")
