"""The usage engine: measurements in, durable usage deltas out, reads answered from memory.

One contract (`contract.UsageEngine`), used by the usage agent, the query page and the
bill run, with no faust or Kafka inside; `reference.ReferenceEngine` implements it in
Python and is the implementation every other one (a native one) is tested against.
Byte formats are in `wire`; the state in memory in `state`; the fold in `fold`; the
de-duplication memory in `uids` (Python dicts) or `uids_rocksdb` (a local RocksDB, a
cache of the usage log wiped at start: `METERLINE_STORE=rocksdb`).

Partitions. State is held per partition of the measurements topic; an account lives on
`partition_for(account, partitions)`. A measurement read from another partition (a
producer that does not key by account with murmur2) is not folded where it was read: it
comes back in `Processed.forwards`, to be produced to its account's partition, whose
owner folds it (today it was folded where read, into the owner's table).

State, with an index. Per account: the windows it actually has (hour of `ts`, split at
the account's billing boundaries), as sorted window starts plus the cells of each
window; a query or a bill run bisects the starts for its range and touches only the
windows in it. A cell holds only what its aggregation needs (SUM and MEAN: count and
sum; MIN, MAX: count and the extreme; LATEST: count and (ts, value); COUNT: the count;
UNIQUE: count and the distinct values), keyed by (aggregation, segment): the segment
("" today) leaves room for aggregations grouped by a string field. The de-duplication
memory is the 64-bit hashes of (meter, uid) per account and hour slot of `ts`, as today,
in Python dicts or, when they outgrow RAM, in a local RocksDB (`uids`).

Durability per batch, not per key. `process` changes the state and returns, per
partition it changed, one delta: the partition's next seq, in chunks of at most
`Limits.max_delta_bytes`, each piece being one account-hour's contribution (its cells
and the uid hashes it adds), never split; an account's pieces share a message unless
they alone exceed one (then they are split between messages by hour: de-duplication is
per account-hour, so that is the unit that must stay whole). The caller produces the
chunks to the usage log's partition, awaits Kafka's acknowledgement, then lets the
batch's offsets be committed. Usage and uids travel together, so an account-hour is
never counted without remembering its uids, or the reverse, and a batch processed
again after a crash is recognised by its uids (even if only some chunks were written).

One log per partition. Deltas (`|delta|p|seq|chunk`), snapshot segments (an
account-hour, `<account>|<hour slot>` like the usage records before the engine),
markers (`|partition|p`) and their tombstones share one compacted topic partition,
co-partitioned with `measurements`, and are read back in the order they were written
(`recover`). The writer keeps one rule: nothing of a batch is written while a snapshot
round is, and the reverse (the usage agent's lock), so in the log every delta with
seq <= S comes before the segments of the round at S, and every later delta after
them. Kafka's compaction removes records whose key was written again later (and old
tombstones) but never reorders what it keeps.

Idempotent apply. `apply` merges a delta message into the state (cells by
`streams.usage.merge`'s rules, uids by union) unless it is already reflected:
  - its key was applied (or produced) here since the last snapshot round: a replay,
    skipped (by key, not position: a producer's retry may write a chunk again after a
    later one, and compaction then keeps only the later copy);
  - seq <= the partition's floor (the last snapshot round's seq): skipped;
  - seq <= the seq of a restored segment newer than the floor: skipped for that
    account-hour only.
Merging is commutative, so chunks met out of order give the same state. The next seq
after recovery is one more than the highest seq seen in any delta, segment or marker
of the partition (`next_seq`).

Snapshots bound recovery. `snapshot(partition)` returns every segment (an account-hour:
its windows and uids) changed since the last confirmed round, each at the round's seq
S, tombstones for segments that emptied, a marker (floor S, newest ts, expiry
thresholds) and the keys of the delta messages with seq <= S. The caller writes the
segments, then the marker, calls `confirm_snapshot(round)`, then tombstones those delta
messages, awaiting each step (`contract.SnapshotRound`); a round that failed is simply
not confirmed, and the next one writes its segments again. The log is compacted, so
the history before a confirmed round disappears and recovery reads at most the deltas
since the last round beyond the state itself. Segments are per account-hour, not per
account, so that each is one atomic message of bounded size however much history an
account has; a busy hour does not make an account's other hours rewrite.

Recovery of partition p (and a standby, continuously), `recover(key, value)` for every
record of the log's partition p, in order from the start:
  - a delta is applied (above); a delta's tombstone only ends its bookkeeping;
  - a segment at seq S replaces its account-hour, unless this engine already applied
    a delta newer than S (a worker reading its own log again after a rebalance that
    kept the partition: what it holds is newer); every delta <= S came before it, so
    what they built is in the segment, and compaction may have removed some of them;
  - a marker raises the floor to S: deltas <= S met later (retries) are skipped;
  - then `next_seq(p)` is right, and consuming measurements resumes at the committed
    offset; a batch processed again is recognised as duplicates.
A crash between the steps of a round leaves either the old floor (the deltas are all
still there; a segment written before the crash holds exactly the deltas before it)
or the new one (the old deltas are skipped or already gone).

Retention, by event time. `expire` measures from each partition's newest ts folded,
never from the wall clock: uids of hour slots older than the dedup horizon plus a day,
windows older than the usage retention. It is a delta of its own, so replicas drop
exactly what the active dropped.

Bounds turn growth into dead letters, never failures: an account-hour with
`max_uids_per_slot` uids refuses more (as today), and an account-hour piece that would
not fit a delta message, or grow its segment past `max_segment_bytes`, dead-letters
that piece's measurements.
"""

from streams.usage.engine.contract import (
    MAX_DELTA_BYTES,
    Applied,
    Delta,
    Forward,
    Limits,
    LockedPeriod,
    Processed,
    SnapshotRecord,
    SnapshotRound,
    Stats,
    UsageEngine,
)
from streams.usage.engine.reference import ReferenceEngine

__all__ = [
    "MAX_DELTA_BYTES",
    "Applied",
    "Delta",
    "Forward",
    "Limits",
    "LockedPeriod",
    "Processed",
    "ReferenceEngine",
    "SnapshotRecord",
    "SnapshotRound",
    "Stats",
    "UsageEngine",
]
