"""Usage: measurements judged, de-duplicated and folded into event-time usage.

One vocabulary, used across this package and the rest of the tree:

- **window**: the span one usage state covers: the UTC hour of a measurement's `ts`,
  split where a billing boundary (a plan or period start/end) falls inside the hour, so
  a billing period's usage is exactly the merge of the windows that start inside it.
  A window is named by its start (epoch ms).
- **record**: what is stored per (account, hour): the state of every aggregation for
  every window starting in that hour, and the uid hashes folded into them
  (`store.UsageRecord`, key `<account>|<hours since epoch>`). One record is one table
  value and one changelog message, so usage and de-duplication change together.
- **bucket**: how a query groups windows on the way out: by hour, by day, or one
  bucket for the whole range.

Modules: `validate` (the fast validator, re-exported from the measurement schema),
`metering` (a batch judged and folded), `state` (mergeable usage state), `store` (the
record layout and range reads), `book` (the usage table of a worker).
"""
