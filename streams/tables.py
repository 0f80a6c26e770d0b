"""Tables whose every key belongs to one account, stored on that account's partition.

faust writes a table change to the changelog partition of the *event being processed*.
meterline derives it from the key instead: a key is `<account>` or `<account>|<rest>`,
and its changelog partition is the account's murmur2 partition, the same partition the
account's measurements, Stripe events, bill commands and bills live on. So:

- writes can happen from a batch (`take_events`) that spans several partitions, and
  from timers, without landing in the wrong partition;
- the worker that owns an account's partition owns all of its state, after any
  rebalance, and faust's table routing (`table_route`) finds it by the account code.

Keys and values are bytes, raw on the wire (values are orjson documents).
"""

from __future__ import annotations

from typing import Any

import faust

from streams.partitioning import partition_for

SEPARATOR = "|"


def account_of(key: str | bytes) -> str:
    text = key.decode() if isinstance(key, bytes) else key
    return text.split(SEPARATOR, 1)[0]


def table_key(account: str, *parts: object) -> str:
    return SEPARATOR.join((account, *map(str, parts)))


class AccountTable(faust.Table):  # type: ignore[type-arg]
    """A faust Table partitioned by the account prefix of its keys."""

    def partition_for_key(self, key: Any) -> int:
        return partition_for(account_of(key), self.partitions)


MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # the largest table value (a busy account-hour of usage)


def account_table(app: faust.App, name: str, partitions: int, help: str) -> AccountTable:
    """Declare an account-partitioned table; keys and values are bytes (raw on the wire).

    Keys must be bytes (`table_key(...).encode()`): faust routes web requests by the
    raw key bytes, which then hash exactly like the account on every other topic.
    """
    table = AccountTable(
        app,
        name=name,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        beacon=app.tables.beacon,
        help=help,
        extra_topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)},
    )
    app.tables.add(table)
    return table
