"""Account and Account Plan: the state the accounts agent keeps from Stripe events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class State(BaseModel):
    """Table values: immutable, camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class CheckoutLink(State):
    """The Stripe Checkout Session that created the account's subscription.

    Ordered by its own guard: checkout and customer events race each other, and neither
    may discard the other's fields.
    """

    sessionId: str
    subscriptionId: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    sourceEventCreated: int = 0
    sourceEventId: str | None = None


class Account(State):
    code: str = Field(description="Account code; the Stripe customer id for Stripe accounts")
    name: str | None = None
    emailAddress: str | None = None
    currency: str | None = None
    stripeCustomerId: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    clientReferenceId: str | None = None
    deleted: bool = False
    createdAt: datetime | None = None
    checkout: CheckoutLink | None = None
    # Ordering guard of the customer fields: `event.created` (epoch s) of the last applied event.
    sourceEventCreated: int = 0
    sourceEventId: str | None = None


class AccountPlanStatus(StrEnum):
    ACTIVE = "ACTIVE"
    TRIALING = "TRIALING"
    PAST_DUE = "PAST_DUE"
    ENDED = "ENDED"  # superseded by a plan change, or the subscription ended
    CANCELED = "CANCELED"
    UNMAPPED = "UNMAPPED"  # the Stripe price maps to no meterline plan (yet)


class AccountPlan(State):
    id: str = Field(
        description="Stripe subscription id, or subscription item id when a subscription "
        "has several metered items; a plan change appends '@<start epoch>'"
    )
    accountCode: str
    planCode: str | None = None
    status: AccountPlanStatus
    startDate: datetime
    endDate: datetime | None = None
    currentPeriodStart: datetime | None = None
    currentPeriodEnd: datetime | None = None
    stripeSubscriptionId: str | None = None
    stripeSubscriptionItemId: str | None = None
    stripePriceId: str | None = None
    stripeLookupKey: str | None = None
    stripeProductId: str | None = None
    stripeStatus: str | None = Field(
        default=None, description="the Stripe subscription status this state was derived from"
    )
    sourceEventCreated: int = 0
    sourceEventId: str | None = None
