"""Commands on `bill.commands` (key = account code; ticks carry an explicit partition)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from streams.schemas.bill import BillStatus


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    requestId: str | None = Field(default=None, description="Caller's id, echoed in logs")


class RunBills(Command):
    """(Re)generate the bills of one account's plans for the period containing `at`."""

    type: Literal["run"] = "run"
    account: str
    at: int | None = Field(default=None, description="Epoch ms; default: when handled")
    reason: Literal["api", "interval", "period_end"] = "api"


class Tick(Command):
    """Timer tick for one partition: run every account on it, finalize ended periods."""

    type: Literal["tick"] = "tick"
    partition: int = Field(ge=0)
    at: int


class ChangeStatus(Command):
    """Approve or lock a bill (m3ter's lifecycle: PENDING → APPROVED → LOCKED)."""

    type: Literal["status"] = "status"
    account: str
    billId: str
    status: Literal[BillStatus.APPROVED, BillStatus.LOCKED]
    expectedVersion: int | None = Field(default=None, ge=1)


BillCommand = Annotated[RunBills | Tick | ChangeStatus, Field(discriminator="type")]
COMMANDS: TypeAdapter[RunBills | Tick | ChangeStatus] = TypeAdapter(BillCommand)
