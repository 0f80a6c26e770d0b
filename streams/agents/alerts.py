"""Alerts: catalog alert rules measured against the accounts whose usage changed → `alerts`.

The usage agent tells which accounts a folded batch touched (`context.usage_seen`); a
timer (every `alert_interval_s`, on every worker) measures those of the partitions this
worker owns against the rules (`streams.alerts.rules`, on the bills a run would make now,
`streams.billing.preview`), and for every rule crossed that is not in the `alertstate`
table yet:
  1. publishes the alert to `alerts` and waits for Kafka's acknowledgement
  2. records it in `alertstate` (the account's partition) and waits for Kafka again
so an alert is published once per rule, account plan and period: a redelivered
measurement or a restarted worker finds it recorded. A crash between 1 and 2 publishes
the same alert (same `id`) again rather than losing it. After a rebalance, and when
rules appear in the catalog, every account of the owned partitions is measured once.
Nothing is measured while the worker is not ready (its tables half recovered).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from streams.alerts.pending import Pending
from streams.alerts.rules import crossed, fired_key
from streams.billing.preview import NoPreview
from streams.clock import from_ms, now_ms
from streams.context import MeterlineApp, WorkerContext
from streams.delivery import deliver
from streams.partitioning import partition_for
from streams.readiness import readiness
from streams.schemas.alerts import Alert
from streams.schemas.catalog import Catalog
from streams.tables import account_table
from streams.topics import ALERTS, faust_topic

log = logging.getLogger(__name__)


def register(app: MeterlineApp, context: WorkerContext) -> None:
    settings = context.settings
    fired = account_table(
        app,
        "alertstate",
        settings.partitions,
        "Alert ids published, by <account>|<rule>|<account plan>|<period start ms>",
    )
    alerts_topic = faust_topic(app, context.topics, ALERTS)
    measurements = context.topics.measurements
    pending = Pending()
    context.usage_seen.append(pending.seen)
    resync = [True]  # measure every owned account at the next round

    def rebalanced(*_: Any, **__: Any) -> None:
        resync[0] = True

    app.on_rebalance_complete.connect(rebalanced)

    def owned() -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == measurements}

    async def due(accounts: list[str], catalog: Catalog, now: datetime) -> list[Alert]:
        previews, usage = context.previews, context.usage
        assert previews is not None and usage is not None
        mine, rules = owned(), list(catalog.alertRules.values())
        out: dict[bytes, Alert] = {}
        for account in accounts:
            if partition_for(account, settings.partitions) not in mine:
                continue  # its new owner measures it after the rebalance
            try:
                bills = previews(account, now)
            except NoPreview:
                continue
            for alert in crossed(rules, bills, catalog, usage.period_values, now):
                key = fired_key(alert)
                if fired.get(key) is None:
                    out[key] = alert
            await asyncio.sleep(0)  # a round of many accounts never holds the agents up
        return list(out.values())

    @app.timer(interval=settings.alert_interval_s)
    async def measure() -> None:
        assert context.catalog is not None and context.accounts is not None
        if not readiness(app).ready:
            return
        catalog = context.catalog.current()
        if not catalog.alertRules:
            pending.watching = False
            pending.clear()
            return
        if resync[0] or not pending.watching:
            mine = owned()
            pending.add(
                account
                for account in context.accounts.account_codes()
                if partition_for(account, settings.partitions) in mine
            )
            pending.watching, resync[0] = True, False
        now = from_ms(now_ms())
        alerts = await due(pending.take(settings.alert_accounts_per_round), catalog, now)
        if not alerts:
            return
        if not readiness(app).ready:  # a rebalance began: the new owners measure again
            return
        # 1. publish and wait for Kafka  2. record as fired, and wait for Kafka again
        await deliver(
            alerts_topic,
            [(a.accountCode.encode(), a.model_dump_json().encode(), None) for a in alerts],
        )
        for alert in alerts:
            fired[fired_key(alert)] = alert.id.encode()
        await fired.confirm()
        for alert in alerts:
            log.info(
                "alert %s rule=%s account=%s plan=%s period=%s value=%s threshold=%s",
                alert.id,
                alert.ruleCode,
                alert.accountCode,
                alert.accountPlanId,
                alert.periodStartDate.isoformat(),
                alert.value,
                alert.threshold,
            )
        context.stats["alerts"] += len(alerts)

    del measure
