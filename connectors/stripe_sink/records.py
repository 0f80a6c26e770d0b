"""Records the sink publishes to `stripe.sync.conflicts` (key: bill id, or the message key
when the bill could not be read).

- `conflict`: a bill line Stripe would not let us change (finalized invoice, deleted
  item); nothing was created in its place.
- `drift`: after a sync, Stripe's items do not add up to the bill total.
- `dead_letter`: a bill version the sink gave up on — unreadable, refused by Stripe
  (other 4xx), a missing customer, or retries exhausted — with Stripe's error if any.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from connectors.stripe_sink.failures import StripeErrorInfo
from streams.schemas.catalog import Frozen

ProblemKind = Literal["conflict", "drift", "dead_letter"]


@dataclass(frozen=True)
class Conflict:
    """A line the sync could not bring in line with the bill."""

    line_id: str | None
    item_id: str | None
    reason: str
    stripe_error: StripeErrorInfo | None = None
    kind: ProblemKind = "conflict"


class SyncProblem(Frozen):
    kind: ProblemKind
    reason: str
    source: str  # topic[partition]@offset of the bill version
    billId: str | None = None
    version: int | None = None
    accountCode: str | None = None
    invoiceId: str | None = None
    lineId: str | None = None
    itemId: str | None = None
    stripeError: dict[str, Any] | None = None
    payload: str | None = None  # the raw message, when it could not be read as a Bill
