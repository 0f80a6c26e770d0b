"""Usage alerts: the events on `alerts`, one per alert rule, account plan and billing period
when the measured value reached the rule's threshold (`streams.alerts`).

Numbers travel as JSON strings ("10000", "250.00"), as on `bills`. `id` is derived from
the rule, the account plan and the period, so a consumer (or a webhook receiver) that
sees an id twice knows it is the same alert.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import AwareDatetime, Field

from streams.schemas.catalog import AlertMeasure, Frozen


class Alert(Frozen):
    id: str = Field(description="Deterministic: the rule, account plan and period")
    ruleCode: str
    accountCode: str
    accountPlanId: str
    billId: str = Field(description="The bill of the period (it may not be published yet)")
    periodStartDate: AwareDatetime
    periodEndDate: AwareDatetime
    measure: AlertMeasure
    aggregationCode: str | None = None
    threshold: Decimal
    value: Decimal = Field(description="The value that reached the threshold")
    currency: str | None = Field(default=None, description="Of a BILL_TOTAL value")
    crossedAt: AwareDatetime = Field(description="When the worker saw the value reach it")
