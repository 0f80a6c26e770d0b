"""One `counter.adjustments` message, handled: decode, check, apply, dead-letter.

For each message, one at a time (concurrency 1, so no offset is committed past it):
  1. decode and validate the adjustment; the message key must be its account
     (co-partitioning) and its counter must be in the catalog
  2. apply it to the account's counter (`streams.counters.state`): a uid seen before
     changes nothing
  3. publish what could not be applied to `counter.adjustments.rejected` (reason, the
     adjustment, `counter.adjustments[p]@o`) and wait for Kafka's acknowledgement
  4. wait until Kafka holds the table write (`confirm`), then the agent lets faust ack.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from typing import Any

import faust
import orjson
from pydantic import ValidationError

from streams.catalog.live import LiveCatalog
from streams.counters.state import AdjustmentRefused, CounterState
from streams.delivery import deliver
from streams.schemas.counters import CounterAdjustment
from streams.schemas.errors import error_text
from streams.sources import source_of

log = logging.getLogger(__name__)


def decode_adjustment(key: bytes | None, raw: bytes | None) -> CounterAdjustment:
    """The adjustment in a message; AdjustmentRefused naming the field otherwise."""
    try:
        adjustment = CounterAdjustment.model_validate_json(raw or b"")
    except ValidationError as exc:
        raise AdjustmentRefused(error_text(exc, whole="adjustment")) from None
    if key is not None and key.decode("utf-8", "replace") != adjustment.account:
        raise AdjustmentRefused(
            f"account: the message key {key!r} is not the adjustment's account "
            f"{adjustment.account!r}"
        )
    return adjustment


def rejection(reason: str, source: str, raw: bytes | None) -> bytes:
    """A `counter.adjustments.rejected` record: the reason, where it was, the adjustment."""
    original: Any
    try:
        original = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        original = raw.decode("utf-8", "replace") if raw else None
    return orjson.dumps({"reason": reason, "source": source, "adjustment": original})


class CounterIntake:
    """What the counters agent does with one `counter.adjustments` message."""

    def __init__(
        self, state: CounterState, rejected: faust.TopicT, catalog: LiveCatalog, stats: Tally[str]
    ) -> None:
        self.state = state
        self.rejected = rejected
        self.catalog = catalog
        self.stats = stats

    async def handle(self, message: Any) -> None:
        source = str(source_of(message))
        try:
            adjustment = decode_adjustment(message.key, message.value)
            if adjustment.counter not in self.catalog.current().counters:
                raise AdjustmentRefused(
                    f"counter: unknown counter {adjustment.counter!r} (not in the catalog)"
                )
            outcome = self.state.apply(adjustment)
        except Exception as exc:  # faust would ack a swallowed message: dead-letter it
            refused = isinstance(exc, AdjustmentRefused)
            reason = str(exc) if refused else f"internal error: {exc!r}"
            self.stats["counter_adjustments_rejected"] += 1
            log.warning("%s counter adjustment rejected: %s", source, reason, exc_info=not refused)
            record = rejection(reason, source, message.value)
            await deliver(self.rejected, [(message.key, record, None)])
            return
        self.stats[f"counter_adjustments_{outcome}"] += 1
        log.info(
            "%s counter adjustment %s %s: account %s counter %s = %d from %s",
            source,
            adjustment.uid,
            outcome,
            adjustment.account,
            adjustment.counter,
            adjustment.value,
            adjustment.date.isoformat(),
        )

    async def confirm(self) -> None:
        await self.state.confirm()
