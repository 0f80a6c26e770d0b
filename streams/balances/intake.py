"""One `balances` message, handled: decode, check, record, dead-letter.

For each message, one at a time (concurrency 1, so no offset is committed past it):
  1. decode and validate the grant; the message key must be its account
     (co-partitioning)
  2. record it on the account (`streams.balances.state`): the same grant again changes
     nothing, another grant with a used uid is refused
  3. publish what could not be recorded to `balances.rejected` (reason, the grant,
     `balances[p]@o`) and wait for Kafka's acknowledgement
  4. wait until Kafka holds the table write (`confirm`), then the agent lets faust ack.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from typing import Any

import faust
import orjson
from pydantic import ValidationError

from streams.balances.state import BalanceState, GrantRefused
from streams.delivery import deliver
from streams.schemas.balances import BalanceGrant
from streams.schemas.errors import error_text
from streams.sources import source_of

log = logging.getLogger(__name__)


def decode_grant(key: bytes | None, raw: bytes | None) -> BalanceGrant:
    """The grant in a message; GrantRefused naming the field otherwise."""
    try:
        grant = BalanceGrant.model_validate_json(raw or b"")
    except ValidationError as exc:
        raise GrantRefused(error_text(exc, whole="grant")) from None
    if key is not None and key.decode("utf-8", "replace") != grant.account:
        raise GrantRefused(
            f"account: the message key {key!r} is not the grant's account {grant.account!r}"
        )
    return grant


def rejection(reason: str, source: str, raw: bytes | None) -> bytes:
    """A `balances.rejected` record: the reason, where it was, the grant."""
    original: Any
    try:
        original = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        original = raw.decode("utf-8", "replace") if raw else None
    return orjson.dumps({"reason": reason, "source": source, "grant": original})


class BalanceIntake:
    """What the balances agent does with one `balances` message."""

    def __init__(self, state: BalanceState, rejected: faust.TopicT, stats: Tally[str]) -> None:
        self.state = state
        self.rejected = rejected
        self.stats = stats

    async def handle(self, message: Any) -> None:
        source = str(source_of(message))
        try:
            grant = decode_grant(message.key, message.value)
            outcome = self.state.record(grant)
        except Exception as exc:  # faust would ack a swallowed message: dead-letter it
            refused = isinstance(exc, GrantRefused)
            reason = str(exc) if refused else f"internal error: {exc!r}"
            self.stats["balance_grants_rejected"] += 1
            log.warning("%s credit grant rejected: %s", source, reason, exc_info=not refused)
            await deliver(
                self.rejected, [(message.key, rejection(reason, source, message.value), None)]
            )
            return
        self.stats[f"balance_grants_{outcome}"] += 1
        log.info(
            "%s credit grant %s %s: account %s %s %s from %s (%s)",
            source,
            grant.uid,
            outcome,
            grant.account,
            grant.amount,
            grant.currency,
            grant.startDate.isoformat(),
            grant.reason,
        )

    async def confirm(self) -> None:
        await self.state.confirm()
