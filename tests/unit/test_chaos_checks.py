"""The chaos run's verdict on Stripe: what counts as a deficit (`connectors.chaos`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors.chaos import Ledger, StripeItems, stripe_deficits


def bill(version: int = 2, **amounts: str) -> dict[str, Any]:
    lines = [{"id": line, "subtotal": amount} for line, amount in amounts.items()]
    total = sum((Decimal(a) for a in amounts.values()), Decimal(0))
    return {
        "id": "bill_1",
        "version": version,
        "currency": "usd",
        "lines": lines,
        "total": str(total),
    }


def items(**per_line: list[int]) -> StripeItems:
    return {
        "bill_1": {line: [{"amount": a} for a in amounts] for line, amounts in per_line.items()}
    }


def test_a_bill_in_stripe_once_per_line_with_its_total_and_synced_version_is_no_deficit() -> None:
    bills = {"bill_1": bill(STANDING="10.00", USAGE="2.50")}
    assert stripe_deficits(bills, {"bill_1": 2}, items(STANDING=[1000], USAGE=[250])) == []


def test_a_line_charged_twice_is_a_deficit_naming_the_bill_and_line() -> None:
    bills = {"bill_1": bill(STANDING="10.00")}
    found = stripe_deficits(bills, {"bill_1": 2}, items(STANDING=[1000, 1000]))
    assert "bill bill_1 v2 line STANDING: 2 Stripe items" in found
    assert "bill bill_1 v2: Stripe holds 2000, the bill 1000" in found


def test_a_missing_line_a_stray_item_and_an_unknown_bill_are_deficits() -> None:
    bills = {"bill_1": bill(STANDING="10.00", USAGE="2.50")}
    stray = items(STANDING=[1000], OLD=[250]) | {"bill_9": {"X": [{"amount": 1}]}}
    found = stripe_deficits(bills, {"bill_1": 2}, stray)
    assert "bill bill_1 v2 line USAGE: 0 Stripe items" in found
    assert "bill bill_1 v2: a Stripe item of no line (OLD)" in found
    assert "Stripe holds items of an unknown bill bill_9" in found


def test_a_bill_version_the_ledger_did_not_sync_is_a_deficit() -> None:
    bills = {"bill_1": bill(version=3, STANDING="10.00")}
    found = stripe_deficits(bills, {"bill_1": 2}, items(STANDING=[1000]))
    assert found == ["bill bill_1 v3: the ledger synced v2"]


def test_the_ledger_counts_each_acknowledged_uid_once() -> None:
    ledger = Ledger()
    first = {"uid": "u1", "account": "a", "measure": {"calls": 5}}
    ledger.add([first, {"uid": "u2", "account": "a", "measure": {"calls": 3}}])
    ledger.add([first])  # a repeated uid, acknowledged again
    assert {k: (str(v), n) for k, (v, n) in ledger.expected().items()} == {"a": ("8", 2)}
