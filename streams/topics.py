"""Every topic meterline uses: name, key, value, partitioning and cleanup policy.

Nobody else spells a topic name. Per-account topics share one partition count and the
account code as key (co-partitioning: one worker holds an account's plans, usage and
bills together).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import faust

    from streams.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    base: str
    key: str
    value: str
    compacted: bool = False
    # None: the deployment's partition count (co-partitioned by account code).
    fixed_partitions: int | None = None
    config: dict[str, str] = field(default_factory=dict)


STRIPE_EVENTS = TopicSpec("stripe.events", "Stripe customer id", "verified Stripe event (JSON)")
MEASUREMENTS = TopicSpec(
    "measurements", "account code", 'm3ter measurement, or {"measurements": [...]} envelope'
)
MEASUREMENTS_REJECTED = TopicSpec(
    "measurements.rejected", "account code", "measurement + reason + source offset"
)
CATALOG = TopicSpec(
    "catalog",
    "<kind>:<code>",
    "meter / aggregation / plan / plan mapping / alert rule (JSON); null = deleted",
    compacted=True,
    fixed_partitions=1,  # a small global table: one partition keeps every reader's view ordered
)
BILL_COMMANDS = TopicSpec("bill.commands", "account code", "run / approve / lock / tick")
BILL_COMMANDS_REJECTED = TopicSpec(
    "bill.commands.rejected", "account code", "command + reason + source offset"
)
BILLS = TopicSpec("bills", "account code", "full bill snapshot, versioned (JSON)")
STRIPE_SYNC = TopicSpec(
    "stripe.sync",
    "bill id",
    "Stripe object ids per bill line, last synced version",
    compacted=True,
)
STRIPE_EVENTS_REJECTED = TopicSpec(
    "stripe.events.rejected", "Stripe customer id", "event + reason (e.g. unmapped price)"
)
STRIPE_CONFLICTS = TopicSpec(
    "stripe.sync.conflicts", "bill id", "bill line Stripe would not let us change + reason"
)
COUNTER_ADJUSTMENTS = TopicSpec(
    "counter.adjustments", "account code", "counter adjustment: account, counter, date, value"
)
COUNTER_ADJUSTMENTS_REJECTED = TopicSpec(
    "counter.adjustments.rejected", "account code", "adjustment + reason + source offset"
)
ALERTS = TopicSpec(
    "alerts", "account code", "usage alert: a rule crossed, once per account plan and period"
)
BALANCES = TopicSpec(
    "balances", "account code", "credit grant: account, currency, amount, dates, reason"
)
BALANCES_REJECTED = TopicSpec(
    "balances.rejected", "account code", "credit grant + reason + source offset"
)
HEARTBEAT = TopicSpec(
    "heartbeat", "process name", "liveness round trips (demo, health checks)", fixed_partitions=1
)

ALL: tuple[TopicSpec, ...] = (
    STRIPE_EVENTS,
    MEASUREMENTS,
    MEASUREMENTS_REJECTED,
    CATALOG,
    BILL_COMMANDS,
    BILL_COMMANDS_REJECTED,
    BILLS,
    STRIPE_SYNC,
    STRIPE_EVENTS_REJECTED,
    STRIPE_CONFLICTS,
    COUNTER_ADJUSTMENTS,
    COUNTER_ADJUSTMENTS_REJECTED,
    ALERTS,
    BALANCES,
    BALANCES_REJECTED,
    HEARTBEAT,
)


@dataclass(frozen=True)
class ResolvedTopic:
    spec: TopicSpec
    name: str
    partitions: int

    @property
    def config(self) -> dict[str, str]:
        config = dict(self.spec.config)
        if self.spec.compacted:
            config["cleanup.policy"] = "compact"
        return config


class Topics:
    """Topic names and partition counts for one deployment (prefix, partitions)."""

    def __init__(self, prefix: str = "", partitions: int = 6) -> None:
        self.prefix = prefix
        self.partitions = partitions

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls(settings.topic_prefix, settings.partitions)

    def resolve(self, spec: TopicSpec) -> ResolvedTopic:
        partitions = spec.fixed_partitions or self.partitions
        return ResolvedTopic(spec, f"{self.prefix}{spec.base}", partitions)

    def all(self) -> list[ResolvedTopic]:
        return [self.resolve(spec) for spec in ALL]

    def name(self, spec: TopicSpec) -> str:
        return self.resolve(spec).name

    @property
    def stripe_events(self) -> str:
        return self.name(STRIPE_EVENTS)

    @property
    def measurements(self) -> str:
        return self.name(MEASUREMENTS)

    @property
    def measurements_rejected(self) -> str:
        return self.name(MEASUREMENTS_REJECTED)

    @property
    def catalog(self) -> str:
        return self.name(CATALOG)

    @property
    def bill_commands(self) -> str:
        return self.name(BILL_COMMANDS)

    @property
    def bill_commands_rejected(self) -> str:
        return self.name(BILL_COMMANDS_REJECTED)

    @property
    def bills(self) -> str:
        return self.name(BILLS)

    @property
    def stripe_sync(self) -> str:
        return self.name(STRIPE_SYNC)

    @property
    def stripe_events_rejected(self) -> str:
        return self.name(STRIPE_EVENTS_REJECTED)

    @property
    def stripe_conflicts(self) -> str:
        return self.name(STRIPE_CONFLICTS)

    @property
    def counter_adjustments(self) -> str:
        return self.name(COUNTER_ADJUSTMENTS)

    @property
    def alerts(self) -> str:
        return self.name(ALERTS)

    @property
    def balances(self) -> str:
        return self.name(BALANCES)

    @property
    def heartbeat(self) -> str:
        return self.name(HEARTBEAT)


def faust_topic(app: faust.App, topics: Topics, spec: TopicSpec) -> faust.TopicT:
    """The faust topic object for a spec: raw bytes in and out (decoded with orjson)."""
    resolved = topics.resolve(spec)
    return app.topic(
        resolved.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=resolved.partitions,
        internal=False,
    )
