"""Waiting for something to happen: poll with a deadline, never a bare sleep.

The one poll loop of the CLI, the dev stack, the demo, the benchmarks and the tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "the condition",
) -> T:
    """`check()` every `interval` s until it returns something truthy, and return that.

    `check` runs at least once, and once more at the deadline; after `timeout` s,
    TimeoutError names `what` and the last value. An exception from `check` ends the wait.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(min(interval, left))
