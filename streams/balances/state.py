"""An account's credit grants, as a worker holds them: table `balances`, key `<account>`
(account-partitioned, `streams.tables`), value an orjson document `{uid: grant}`.

`record_grant` is pure: the same grant again changes nothing (a redelivery, a client's
retry), and another grant with a uid already used is refused: a uid names one grant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from streams.billing.credits import balance_line_id
from streams.schemas.balances import Balance, BalanceGrant
from streams.schemas.bill import Bill
from streams.tables import AccountTable, account_key

RECORDED = "recorded"
DUPLICATE = "duplicate"


class GrantRefused(ValueError):
    """A grant that cannot be recorded, with the field and the rule."""


class Recorded(NamedTuple):
    stored: bytes | None  # the new value of the key; None: unchanged
    outcome: str


def grants_of(stored: bytes | None) -> list[BalanceGrant]:
    """The account's grants, oldest first (start date, then uid)."""
    document: dict[str, Any] = orjson.loads(stored) if stored else {}
    grants = [BalanceGrant.model_validate(value) for value in document.values()]
    return sorted(grants, key=lambda grant: (grant.startDate, grant.uid))


def record_grant(stored: bytes | None, grant: BalanceGrant) -> Recorded:
    """The account's stored document with `grant` recorded (see the module)."""
    document: dict[str, Any] = orjson.loads(stored) if stored else {}
    seen = document.get(grant.uid)
    if seen is not None:
        if BalanceGrant.model_validate(seen).same_grant(grant):
            return Recorded(None, DUPLICATE)
        raise GrantRefused(
            f"uid: {grant.uid!r} was already used for another grant to account "
            f"{grant.account!r}; a uid names one grant"
        )
    document[grant.uid] = grant.model_dump(mode="json")
    return Recorded(orjson.dumps(document), RECORDED)


def remaining(grants: Iterable[BalanceGrant], bills: Iterable[Bill]) -> list[Balance]:
    """Each grant with what the account's latest bills consumed of it and what is left."""
    latest = list(bills)
    out: list[Balance] = []
    for grant in grants:
        line_id = balance_line_id(grant.uid)
        consumed = -sum(
            (line.subtotal for bill in latest for line in bill.lines if line.id == line_id),
            Decimal(0),
        )
        out.append(Balance(grant=grant, consumed=consumed, remaining=grant.amount - consumed))
    return out


class BalanceState:
    """Credit grants of the accounts on this worker's partitions."""

    def __init__(self, table: AccountTable) -> None:
        self.table = table

    def grants(self, account: str) -> Sequence[BalanceGrant]:
        return grants_of(self.table.get(account_key(account)))

    def record(self, grant: BalanceGrant) -> str:
        """Record one grant in the table; its outcome (GrantRefused if refused)."""
        key = account_key(grant.account)
        recorded = record_grant(self.table.get(key), grant)
        if recorded.stored is not None:
            self.table[key] = recorded.stored
        return recorded.outcome

    async def confirm(self) -> None:
        """Wait until Kafka holds every write (`AccountTable.confirm`)."""
        await self.table.confirm()
