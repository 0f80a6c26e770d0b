"""Waiting for Kafka ourselves: a send counts once the broker acknowledged it.

faust's commit does not wait for what an agent produced (its flush gives up after one
0.1 s wait, see DESIGN.md), so an agent that stands for an effect awaits the effect's
acknowledgement before its events are acked. A send Kafka refused (broker down, leader
moving, timeout) is sent again with back-off, without end: giving up would let faust
commit past an effect that never happened. A worker stuck here shows as lag, and its
health check reports the pending sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)

Record = tuple[bytes | None, bytes | None, int | None]  # key, value, partition (None: by key)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (0-based)."""
    return RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]


async def deliver(topic: Any, records: Sequence[Record]) -> None:
    """Send `records` to a faust topic, in their order, and return once Kafka acknowledged
    every one."""
    remaining = list(records)
    attempt = 0
    while remaining:
        # queued one after the other, then awaited together: sends started at once are
        # queued in any order (the first to wait for the producer's start or the topic's
        # metadata went last: a batch's dead letters came out of order)
        queued = [await _queue(topic, record) for record in remaining]
        outcomes = await asyncio.gather(*queued, return_exceptions=True)
        failed = [
            (record, error)
            for record, error in zip(remaining, outcomes, strict=True)
            if isinstance(error, BaseException)
        ]
        if not failed:
            return
        delay = backoff(attempt)
        attempt += 1
        log.warning(
            "%d of %d sends to %s failed (first: %r); sending them again in %.1f s",
            len(failed),
            len(remaining),
            topic.get_topic_name(),
            failed[0][1],
            delay,
        )
        await asyncio.sleep(delay)
        remaining = [record for record, _ in failed]


async def _queue(topic: Any, record: Record) -> Awaitable[object]:
    """The record in the producer's queue: its delivery, or its refusal as a failed one."""
    key, value, partition = record
    try:
        delivery: Awaitable[object] = await topic.send(
            key=key, value=value, partition=partition, force=True
        )
    except Exception as exc:
        refused = asyncio.get_running_loop().create_future()
        refused.set_exception(exc)
        return refused
    return delivery
