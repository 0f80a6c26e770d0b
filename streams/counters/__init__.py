"""Counters: counter adjustments → each account's count of each counter over time.

`state` keeps an account's adjustments of one counter (table `counters`, on the account's
partition) and applies one adjustment idempotently; `intake` handles one
`counter.adjustments` message end to end (decode, check, apply, dead-letter, confirm).
Bill runs read the history (`streams.billing.counters` prices it).
"""
