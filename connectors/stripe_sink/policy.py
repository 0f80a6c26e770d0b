"""What the sink does with a bill version: whether to sync it, in which mode, and whether
to finalize. Pure: decided from the bill and the deployment's settings only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from streams.schemas.bill import Bill, BillStatus
from streams.settings import Settings


class Mode(StrEnum):
    INVOICE = "invoice"  # one draft invoice per bill, one item per line on it
    SUBSCRIPTION = "subscription"  # pending items the subscription's next invoice pulls in


class Trigger(StrEnum):
    EVERY_VERSION = "every-version"
    APPROVED_ONLY = "approved-only"  # m3ter's "only send bill on approval"


SETTLED = frozenset({BillStatus.APPROVED, BillStatus.LOCKED})


@dataclass(frozen=True)
class SyncPolicy:
    mode: Mode = Mode.INVOICE
    overrides: Mapping[str, Mode] = field(default_factory=dict)
    """`account:<code>` or `plan:<code>` → mode; an account override wins over a plan's."""
    trigger: Trigger = Trigger.EVERY_VERSION
    finalize_on_approval: bool = False
    collection_method: str = "charge_automatically"
    days_until_due: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> SyncPolicy:
        return cls(
            mode=Mode(settings.stripe_mode),
            overrides={scope: Mode(mode) for scope, mode in settings.stripe_mode_overrides.items()},
            trigger=Trigger(settings.stripe_trigger),
            finalize_on_approval=settings.stripe_finalize_on_approval,
            collection_method=settings.stripe_collection_method,
            days_until_due=settings.stripe_days_until_due,
        )

    def mode_for(self, bill: Bill) -> Mode:
        """The deployment's mode unless the bill's account or plan overrides it."""
        for scope in (f"account:{bill.accountCode}", f"plan:{bill.planCode}"):
            if scope in self.overrides:
                return self.overrides[scope]
        return self.mode

    def wants(self, bill: Bill) -> bool:
        """Whether this version is synced at all (approved-only skips PENDING versions)."""
        return self.trigger is Trigger.EVERY_VERSION or bill.status in SETTLED

    def finalizes(self, bill: Bill, mode: Mode) -> bool:
        """Whether syncing this version ends with a finalized invoice."""
        return mode is Mode.INVOICE and self.finalize_on_approval and bill.status in SETTLED
