"""What a worker's agents share, typed: settings, topics, counters and the domain views
each agent offers the others.

Agents register in order (catalog, usage, accounts, counters, billing: `streams.agents`); each
sets the view it owns, and reads the others' views when it runs, never at registration.
The views are Protocols, so a domain module depends on what it reads, not on the agent
that provides it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import faust
from faust.types import ConsumerT

from streams.commits import InOrderConsumer
from streams.settings import Settings
from streams.topics import Topics
from streams.usage.intake import BulkIntake

if TYPE_CHECKING:
    from datetime import datetime

    from streams.billing.counters import CountChange
    from streams.catalog.live import LiveCatalog
    from streams.schemas.accounts import Account, AccountPlan
    from streams.schemas.balances import BalanceGrant
    from streams.schemas.bill import Bill
    from streams.schemas.catalog import AggregationFunction


class AccountsView(Protocol):
    """Accounts and their plans on this worker's partitions (the accounts agent's)."""

    def account(self, code: str) -> Account | None: ...

    def plans(self, code: str) -> list[AccountPlan]: ...

    def account_codes(self) -> list[str]: ...

    def boundaries(self, code: str) -> list[int]: ...


class UsageView(Protocol):
    """Usage of this worker's accounts (the usage agent's)."""

    def period_values(
        self,
        account: str,
        functions: Mapping[str, AggregationFunction],
        start_ms: int,
        end_ms: int,
    ) -> Mapping[str, Decimal | None]: ...

    def period_segment_values(
        self,
        account: str,
        functions: Mapping[str, AggregationFunction],
        start_ms: int,
        end_ms: int,
    ) -> Mapping[tuple[str, str], Decimal | None]: ...


class CountersView(Protocol):
    """Counter adjustments of this worker's accounts (the counters agent's)."""

    def history(self, account: str, counter: str) -> Sequence[CountChange]: ...


class BalancesView(Protocol):
    """Credit grants of this worker's accounts (the balances agent's)."""

    def grants(self, account: str) -> Sequence[BalanceGrant]: ...


class LocksView(Protocol):
    """Locked billing periods (the billing agent's)."""

    def locked(self, account: str, ts_ms: int) -> str | None: ...

    def locked_periods(self, account: str) -> list[tuple[int, int, str]]:
        """(start, end, why a measurement in it is refused) of each locked period."""
        ...


@dataclass
class WorkerContext:
    """What agents share. A view is None until its agent registered."""

    settings: Settings
    topics: Topics
    stats: Counter[str] = field(default_factory=Counter)
    catalog: LiveCatalog | None = None
    usage: UsageView | None = None
    accounts: AccountsView | None = None
    counters: CountersView | None = None
    balances: BalancesView | None = None
    locks: LocksView | None = None
    # Accounts whose plans or locked periods changed (written here or read from a
    # changelog) since the usage engine was last told: it is told before its next batch.
    stale_facts: set[str] = field(default_factory=set)
    usage_engine: str = ""  # which implementation of the usage engine runs: native, python
    # Called with each batch of `measurements` messages once the usage engine folded it
    # (the alerts agent notes the accounts whose usage changed).
    usage_seen: list[Callable[[Sequence[Any]], None]] = field(default_factory=list)
    # The bills an account would get for the periods containing a moment, never stored
    # (the billing agent's, `streams.billing.preview`).
    previews: Callable[[str, datetime], list[Bill]] | None = None
    # The latest version of each bill of an account, by id (the billing agent's).
    bills: Callable[[str], Mapping[str, Bill]] | None = None


class MeterlineApp(faust.App):
    """A faust App that carries the meterline WorkerContext."""

    def __init__(self, id: str, *, context: WorkerContext, **options: Any) -> None:
        super().__init__(id, **options)
        self.context = context
        self.watchdog: Any = None  # a streams.watchdog.Watchdog once the app is built
        # where the consumer hands `measurements` (streams.usage.intake), if anywhere
        self.usage_intake: BulkIntake | None = None

    def _new_consumer(self) -> ConsumerT:
        # faust's consumer, committing no offset past a message not yet acked
        # (`streams.commits`)
        consumer = InOrderConsumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            loop=self.transport.loop,
        )
        if self.usage_intake is not None:
            consumer.use_intake(self.usage_intake)
        return consumer
