"""Request counting, so a test can prove a client-side rate limiter holds."""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

JOURNAL_SIZE = 1_000


class RequestStats:
    """Counts /v1 requests as they arrive (before any fault), per endpoint and status,
    and the most requests seen within any one-second window; keeps the last requests
    (time answered, method, path, query, form body, status) in a journal."""

    def __init__(self) -> None:
        self.journal: deque[dict[str, Any]] = deque(maxlen=JOURNAL_SIZE)
        self.reset()

    def reset(self) -> None:
        self.total = 0
        self.by_endpoint: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.max_per_second = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._window: deque[float] = deque()
        self.journal.clear()

    def arrived(self, endpoint: str) -> None:
        tick = time.monotonic()
        self.total += 1
        self.by_endpoint[endpoint] += 1
        self.last_at = time.time()
        self.first_at = self.first_at or self.last_at
        window = self._window
        window.append(tick)
        while window[0] <= tick - 1.0:
            window.popleft()
        self.max_per_second = max(self.max_per_second, len(window))

    def answered(self, status: int, method: str, path: str, query: str, body: bytes) -> None:
        self.by_status[status] += 1
        self.journal.append(
            {
                "at": time.time(),
                "method": method,
                "path": path,
                "query": query,
                "body": body.decode("utf-8", "replace"),
                "status": status,
            }
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_endpoint": dict(self.by_endpoint),
            "by_status": {str(status): count for status, count in self.by_status.items()},
            "max_per_second": self.max_per_second,
            "first_at": self.first_at,
            "last_at": self.last_at,
        }
