"""Balances: credit grants → each account's grants, and what its bills left of them.

`state` keeps an account's grants (table `balances`, on the account's partition) and
records one grant idempotently; `intake` handles one `balances` message end to end
(decode, check, record, dead-letter, confirm). Bill runs read the grants
(`streams.billing.credits` applies them); what is left of each is read from the
account's latest bills (`remaining`).
"""
