"""Billing: usage and plans priced into versioned bills.

`periods` (billing periods of an account plan), `pricing` (bands, tiered and volume),
`bills` (a bill built from a period's values, its lifecycle PENDING → APPROVED →
LOCKED), `runs` (which bills a run makes, finalization, locked periods) are pure;
`state` is the bill tables of a worker and what each bill command does to them.
"""
