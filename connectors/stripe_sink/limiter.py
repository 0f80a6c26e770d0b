"""A token bucket shared by every Stripe call of the process (all threads).

With a capacity of one token, calls are spaced at least 1/rate seconds apart, so any
one-second window holds at most `rate` calls (`limiter_for` adds a margin for jitter).
Stripe allows 100 requests/s live and 25 in test mode; the defaults stay below (see
`Settings.stripe_requests_per_second`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Limiter(Protocol):
    def acquire(self) -> float:
        """Block until a call may go out; return the seconds waited."""
        ...


class Unlimited:
    def acquire(self) -> float:
        return 0.0


class TokenBucket:
    """`rate` tokens a second, at most `capacity` saved up; a call spends one.

    Callers queue on one lock and each waits for its token while holding it, so tokens
    are handed out in order, and the refill after a late wake-up (an oversleep, a busy
    interpreter) counts from when the token was really taken: calls are never closer
    together than 1/rate, however late the previous one went out.
    """

    def __init__(
        self,
        rate: float,
        capacity: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._tokens = capacity
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def acquire(self) -> float:
        with self._lock:
            self._refill()
            waited = 0.0
            if self._tokens < 1:
                waited = (1 - self._tokens) / self.rate
                self._sleep(waited)
                self._refill()
            self._tokens -= 1
            return waited


# Stripe counts requests as they arrive: spaced exactly 1/rate apart when their tokens
# are taken, rate + 1 of them span exactly one second, and any delay between taking the
# token and reaching Stripe (the SDK, a busy interpreter) can squeeze them into one. A 5%
# slower bucket leaves 1/(20 * rate) s per request (2.5 ms at 20/s) for that.
JITTER_MARGIN = 0.05


def limiter_for(rate: float | None) -> Limiter:
    """At most `rate` calls in any one second (None: no limit)."""
    return Unlimited() if rate is None else TokenBucket(rate * (1 - JITTER_MARGIN))
