"""Stripe failures as values: what went wrong, whether retrying can help, and how long to
wait. Pure classification, plus the exponential backoff with jitter the sink applies
while the bill's partition is paused.

Retried: 429, 409 (lock timeouts), 5xx and network errors or timeouts (every write
carries an idempotency key, so a retry after a write that was applied is replayed, not
repeated). `Stripe-Should-Retry` overrides that when Stripe sends it; `Retry-After` is a
floor on the delay. Every other 4xx is final.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import stripe


@dataclass(frozen=True)
class StripeErrorInfo:
    """What Stripe answered (status None: no answer at all — network error or timeout)."""

    status: int | None
    code: str | None
    message: str
    param: str | None = None
    request_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "requestId": self.request_id,
        }

    def describe(self) -> str:
        status = "no response" if self.status is None else f"HTTP {self.status}"
        code = f" {self.code}" if self.code else ""
        param = f" (param {self.param})" if self.param else ""
        return f"{status}{code}{param}: {self.message}"


class StripeFailure(Exception):
    """A Stripe call that did not succeed, with the verdict on retrying it."""

    def __init__(
        self, operation: str, info: StripeErrorInfo, *, retryable: bool, retry_after: float | None
    ) -> None:
        super().__init__(f"{operation}: {info.describe()}")
        self.operation = operation
        self.info = info
        self.retryable = retryable
        self.retry_after = retry_after

    @property
    def code(self) -> str | None:
        return self.info.code

    @property
    def status(self) -> int | None:
        return self.info.status


def should_retry(status: int | None, headers: Mapping[str, str]) -> bool:
    """Stripe's verdict when it gives one, else: no response, 409, 429 and 5xx are retried."""
    verdict = _header(headers, "stripe-should-retry")
    if verdict in ("true", "false"):
        return verdict == "true"
    return status is None or status in (409, 429) or status >= 500


def retry_after(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` in seconds, if Stripe sent a usable one."""
    value = _header(headers, "retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def failure_from(operation: str, error: stripe.StripeError) -> StripeFailure:
    headers: Mapping[str, str] = error.headers or {}
    status = None if isinstance(error, stripe.APIConnectionError) else error.http_status
    info = StripeErrorInfo(
        status=status,
        code=error.code,
        message=str(error.user_message or type(error).__name__),
        param=getattr(error, "param", None),
        request_id=error.request_id,
    )
    return StripeFailure(
        operation,
        info,
        retryable=should_retry(status, headers),
        retry_after=retry_after(headers),
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return str(value).strip().lower()
    return None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with "equal jitter": attempt n waits a random time in
    [c/2, c] where c = min(max_s, base_s * 2^(n-1)); never less than Retry-After."""

    base_s: float = 0.5
    max_s: float = 60.0
    max_attempts: int = 30

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        draw: Callable[[], float] = random.random,
    ) -> float:
        ceiling = min(self.max_s, self.base_s * 2.0 ** min(max(attempt - 1, 0), 62))
        jittered = ceiling * (0.5 + 0.5 * draw())
        if retry_after is not None:
            return max(jittered, min(retry_after, self.max_s))
        return jittered

    def exhausted(self, attempt: int) -> bool:
        """Whether `attempt` failed attempts are all this bill version gets."""
        return attempt >= self.max_attempts
