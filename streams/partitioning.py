"""Which partition an account lives on: the Java client's murmur2, as faust and aiokafka use.

Every producer and every account-keyed table must agree on this, or co-partitioning
breaks silently (confluent-kafka producers set `partitioner=murmur2_random`).
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=262_144)
def partition_for(account: str, partitions: int) -> int:
    """The partition of `account` in a topic of `partitions` partitions."""
    return int(murmur2(account.encode()) & 0x7FFFFFFF) % partitions
