"""Accounts: Stripe events → accounts and account plans.

`events` turns one Stripe event into the change it makes to an account and its plans
(pure, both Stripe API shapes, order-safe); `state` is the two account tables of a
worker; `intake` handles one `stripe.events` message end to end (decode, apply,
dead-letter, confirm).
"""
