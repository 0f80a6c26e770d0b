"""An account's adjustments of one counter, as a worker holds them: table `counters`,
key `<account>|<counter>` (account-partitioned, `streams.tables`), value an orjson
document:

    {"changes": [[at ms, value, receivedAt ms, uid], ...],   # ordered by at
     "uids": {uid: "<at ms>:<value>"}}                        # every uid applied

`apply_adjustment` is pure: the same uid again changes nothing (a redelivery, a client's
retry), the same uid with another date or value is refused, and of two adjustments for
the same moment the one received last counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from streams.billing.counters import CountChange
from streams.clock import epoch_ms, from_ms
from streams.schemas.counters import CounterAdjustment
from streams.tables import AccountTable, table_key

APPLIED = "applied"
DUPLICATE = "duplicate"
SUPERSEDED = "superseded"  # a value for the same moment received later already counts


class AdjustmentRefused(ValueError):
    """An adjustment that cannot be applied, with the field and the rule."""


class Applied(NamedTuple):
    stored: bytes | None  # the new value of the key; None: unchanged
    outcome: str


def apply_adjustment(stored: bytes | None, adjustment: CounterAdjustment) -> Applied:
    """The counter's stored document with `adjustment` applied (see the module)."""
    document: dict[str, Any] = orjson.loads(stored) if stored else {"changes": [], "uids": {}}
    at = epoch_ms(adjustment.date)
    fingerprint = f"{at}:{adjustment.value}"
    seen = document["uids"].get(adjustment.uid)
    if seen == fingerprint:
        return Applied(None, DUPLICATE)
    if seen is not None:
        seen_at, _, seen_value = seen.partition(":")
        raise AdjustmentRefused(
            f"uid: {adjustment.uid!r} was already used for counter {adjustment.counter!r} "
            f"of account {adjustment.account!r} with date "
            f"{from_ms(int(seen_at)).isoformat()} and value {seen_value}; "
            "a uid names one adjustment"
        )
    document["uids"][adjustment.uid] = fingerprint
    entry = [at, adjustment.value, adjustment.receivedAt, adjustment.uid]
    changes: list[list[Any]] = document["changes"]
    same = next((i for i, change in enumerate(changes) if change[0] == at), None)
    outcome = APPLIED
    if same is None:
        changes.append(entry)
        changes.sort(key=lambda change: change[0])
    elif (changes[same][2], changes[same][3]) < (adjustment.receivedAt, adjustment.uid):
        changes[same] = entry
    else:
        outcome = SUPERSEDED
    return Applied(orjson.dumps(document), outcome)


def history_of(stored: bytes | None) -> list[CountChange]:
    """The counter's changes in time order."""
    if not stored:
        return []
    return [CountChange(from_ms(at), value) for at, value, *_ in orjson.loads(stored)["changes"]]


class CounterState:
    """Counter adjustments of the accounts on this worker's partitions."""

    def __init__(self, table: AccountTable) -> None:
        self.table = table

    def history(self, account: str, counter: str) -> Sequence[CountChange]:
        return history_of(self.table.get(table_key(account, counter).encode()))

    def apply(self, adjustment: CounterAdjustment) -> str:
        """Apply one adjustment to the table; its outcome (AdjustmentRefused if refused)."""
        key = table_key(adjustment.account, adjustment.counter).encode()
        applied = apply_adjustment(self.table.get(key), adjustment)
        if applied.stored is not None:
            self.table[key] = applied.stored
        return applied.outcome

    async def confirm(self) -> None:
        """Wait until Kafka holds every write (`AccountTable.confirm`)."""
        await self.table.confirm()
