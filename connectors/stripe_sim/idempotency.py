"""Stripe's `Idempotency-Key`: the first result of a key is replayed for 24 hours.

A key is scoped to the API key. Reusing it on another endpoint or with other parameters
is an `idempotency_error`. Results are stored only once execution began (see `StripeError`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from connectors.stripe_sim.errors import StripeError

MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Stored:
    endpoint: str
    fingerprint: bytes
    status: int
    body: bytes
    stored_at: int


def fingerprint(params: dict[str, Any]) -> bytes:
    return orjson.dumps(params, option=orjson.OPT_SORT_KEYS)


class IdempotencyStore:
    def __init__(self, ttl_seconds: int, now: Callable[[], int]) -> None:
        self._ttl = ttl_seconds
        self._now = now
        self._entries: OrderedDict[tuple[str, str], Stored] = OrderedDict()

    def replay(self, scope: str, key: str, endpoint: str, print_: bytes) -> Stored | None:
        """The stored result for this key, None if new; raises on a mismatched reuse."""
        if len(key) > MAX_KEY_LENGTH:
            raise StripeError(
                400,
                f"Idempotency keys are at most {MAX_KEY_LENGTH} characters long.",
                type_="idempotency_error",
                replayable=False,
            )
        self._prune()
        stored = self._entries.get((scope, key))
        if stored is None:
            return None
        if stored.endpoint != endpoint or stored.fingerprint != print_:
            raise StripeError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they"
                f" were first used with. Try using a key other than '{key}' if you meant to"
                " execute a different request.",
                type_="idempotency_error",
                replayable=False,
            )
        return stored

    def save(self, scope: str, key: str, stored: Stored) -> None:
        self._entries[(scope, key)] = stored

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _prune(self) -> None:
        # Entries are appended in clock order and the clock only moves forward.
        horizon = self._now() - self._ttl
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.stored_at > horizon:
                break
            self._entries.popitem(last=False)
