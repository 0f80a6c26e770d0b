"""Accounts whose usage changed since the alert rules last measured them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson


def accounts_of(messages: Sequence[Any]) -> list[str]:
    """The accounts of the measurements in `measurements` messages (one measurement or an
    envelope each), in order; what the usage engine cannot read is skipped here."""
    found: dict[str, None] = {}
    for message in messages:
        try:
            document = orjson.loads(message.value or b"null")
        except orjson.JSONDecodeError:
            continue
        batch = document.get("measurements", [document]) if isinstance(document, dict) else []
        for measurement in batch if isinstance(batch, list) else []:
            account = measurement.get("account") if isinstance(measurement, dict) else None
            if isinstance(account, str):
                found[account] = None
    return list(found)


class Pending:
    """Accounts to measure, oldest first; noted only while `watching` (rules exist)."""

    def __init__(self) -> None:
        self.watching = False
        self._accounts: dict[str, None] = {}

    def seen(self, messages: Sequence[Any]) -> None:
        if self.watching:
            self.add(accounts_of(messages))

    def add(self, accounts: Iterable[str]) -> None:
        self._accounts.update(dict.fromkeys(accounts))

    def take(self, limit: int) -> list[str]:
        taken = list(self._accounts)[:limit]
        for account in taken:
            del self._accounts[account]
        return taken

    def clear(self) -> None:
        self._accounts.clear()

    def __len__(self) -> int:
        return len(self._accounts)
