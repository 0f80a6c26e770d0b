"""Deterministic Stripe idempotency keys: the same bill version, line and operation always
send the same key, so a retry or a replay after a crash is applied once by Stripe.

A key derives from the record only (never the clock or randomness). Stripe keeps keys for
24 hours and refuses a key reused with other parameters; the ledger and the adoption of
existing items (see `sync`) cover what keys cannot.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

PREFIX = "meterline-"


class Operation(StrEnum):
    CREATE_INVOICE = "invoice.create"
    FINALIZE_INVOICE = "invoice.finalize"
    CREATE_ITEM = "item.create"
    UPDATE_ITEM = "item.update"


def idempotency_key(bill_id: str, version: int, line_id: str, operation: Operation) -> str:
    """`meterline-<sha256 hex>` of (bill id, version, line id or "", operation)."""
    material = "\x1f".join((bill_id, str(version), line_id, operation.value))
    return PREFIX + hashlib.sha256(material.encode()).hexdigest()
