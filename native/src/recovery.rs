//! Durability and recovery (`ReferenceEngine.apply/restore/recover/expire/snapshot`):
//! deltas merged idempotently, snapshot segments and markers restored, retention by
//! event time, snapshot rounds. Every message is read in full before the state changes.

use crate::dedup::partition_for;
use crate::engine::{DeltaOut, Engine};
use crate::state::{DAY_MS, HOUR_MS};
use crate::wire::{self, DeltaHeader, Snapshot};

pub struct Round {
    pub seq: i64,
    pub records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub marker: (Vec<u8>, Vec<u8>),
    pub obsolete: Vec<Vec<u8>>,
}

impl Engine {
    /// Apply one delta message; (partition, seq, chunk, applied).
    pub fn apply(&mut self, value: &[u8]) -> Result<(i64, i64, i64, bool), String> {
        let message = wire::decode_delta(value)?;
        let header = &message.header;
        let (partition, seq, chunk) = (header.partition, header.seq, header.chunk);
        let partitions = self.config.partitions;
        let key = wire::delta_key(partition, seq, chunk);
        let state = self.states.entry(partition).or_default();
        state.seq = state.seq.max(seq);
        // a replay is recognised by its key, not its position (see the reference)
        if seq <= state.floor || state.seen.get(&key) {
            state.seen.setdefault(&key, false);
            return Ok((partition, seq, chunk, false));
        }
        let mut pieces = Vec::new();
        for (account, slots) in message.accounts {
            if partition_for(&account, partitions) as i64 != partition {
                return Err(format!(
                    "delta.accounts: {} does not live on partition {}",
                    account, partition
                ));
            }
            for (slot, piece) in slots {
                if state.skips(&account, slot, seq) {
                    continue;
                }
                pieces.push((account.clone(), slot, piece?));
            }
        }
        state.seen.set(&key, true);
        state.applied(seq, chunk, header.chunks);
        for (account, slot, piece) in pieces {
            state.merge(&account, slot, piece.windows, &piece.uids);
        }
        if let Some((uids_before, windows_before)) = header.expire {
            state.expire(seq, uids_before, windows_before);
        }
        state.newest = state.newest.max(header.newest);
        Ok((partition, seq, chunk, true))
    }

    /// Load one segment or marker record (a tombstone deletes the segment).
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        match wire::decode_snapshot(key, value)? {
            Snapshot::Nothing => {}
            Snapshot::Marker {
                partition,
                seq,
                newest,
                expired,
            } => {
                let state = self.states.entry(partition).or_default();
                state.raise_floor(seq);
                state.newest = state.newest.max(newest);
                state.expired = (
                    state.expired.0.max(expired.0),
                    state.expired.1.max(expired.1),
                );
            }
            Snapshot::Tombstone { account, slot } => {
                let partition = self.partition_of(&account);
                let state = self.states.entry(partition).or_default();
                state.forget_segment(&account, slot);
            }
            Snapshot::Segment {
                partition: written,
                account,
                slot,
                seq,
                piece,
            } => {
                let partition = self.partition_of(&account);
                let state = self.states.entry(partition).or_default();
                if written != partition {
                    return Err(format!(
                        "segment.partition: {} lives on {}",
                        account, partition
                    ));
                }
                state.seq = state.seq.max(seq);
                if seq < state.complete {
                    return Ok(()); // this replica applied deltas after the segment's
                }
                state.replace(&account, slot, piece.windows, &piece.uids);
                if seq > state.floor {
                    state.set_pending(&account, slot, seq);
                }
            }
        }
        Ok(())
    }

    /// One record of the usage log, in the log's order.
    pub fn recover(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        if !wire::is_delta_key(key) {
            return self.restore(key, value);
        }
        match value {
            Some(value) => self.apply(value).map(|_| ()),
            None => {
                let partition = wire::delta_partition(key).ok_or("delta key: not a delta key")?;
                if let Some(state) = self.states.get_mut(&partition) {
                    state.seen.pop(key);
                }
                Ok(())
            }
        }
    }

    pub fn expire(&mut self, partitions: Option<Vec<i64>>) -> Vec<DeltaOut> {
        let mut chosen = partitions.unwrap_or_else(|| self.states.keys().copied().collect());
        chosen.sort_unstable();
        let (past_ms, retention_days) = (self.config.past_ms, self.config.retention_days);
        let mut out = Vec::new();
        for partition in chosen {
            let Some(state) = self.states.get_mut(&partition) else {
                continue;
            };
            if state.newest == 0 {
                continue;
            }
            let newest_slot = state.newest.div_euclid(HOUR_MS);
            let uids_before = newest_slot - (past_ms + DAY_MS).div_euclid(HOUR_MS);
            let windows_before = newest_slot - retention_days * 24;
            if !state.has_expired(uids_before, windows_before) {
                continue;
            }
            let seq = state.seq + 1;
            let header = DeltaHeader {
                partition,
                seq,
                chunk: 0,
                chunks: 1,
                newest: state.newest,
                expire: Some((uids_before, windows_before)),
            };
            let value = wire::delta_value(&header, &[]);
            state.expire(seq, uids_before, windows_before);
            let key = wire::delta_key(partition, seq, 0);
            state.seq = seq;
            state.applied(seq, 0, 1);
            state.seen.set(&key, true);
            out.push(DeltaOut {
                partition,
                seq,
                chunk: 0,
                chunks: 1,
                key,
                value,
            });
        }
        out
    }

    pub fn snapshot(&mut self, partition: i64) -> Round {
        let state = self.states.entry(partition).or_default();
        let seq = state.seq;
        let segments = state.snapshot_segments();
        let mut records = Vec::with_capacity(segments.len());
        for (account, slot) in segments {
            let windows = state.segment_windows(&account, slot);
            let mut hashes = state.segment_hashes(&account, slot);
            let key = wire::segment_key(&account, slot);
            if windows.is_empty() && hashes.is_empty() {
                records.push((key, None));
                continue;
            }
            let value = wire::segment_value(
                partition,
                &account,
                slot,
                seq,
                windows.iter().map(|(start, cells)| (start, cells)),
                &mut hashes,
            );
            records.push((key, Some(value)));
        }
        let marker = wire::marker_value(partition, seq, state.newest, state.expired);
        Round {
            seq,
            records,
            marker: (wire::marker_key(partition), marker),
            obsolete: state.seen.keys(),
        }
    }

    pub fn confirm_snapshot(&mut self, partition: i64, seq: i64, obsolete: &[Vec<u8>]) {
        let Some(state) = self.states.get_mut(&partition) else {
            return;
        };
        state.confirmed();
        for key in obsolete {
            state.seen.pop(key);
        }
        state.raise_floor(seq);
    }

    pub fn next_seq(&self, partition: i64) -> i64 {
        self.states.get(&partition).map_or(1, |state| state.seq + 1)
    }

    pub fn revoke(&mut self, partition: i64) {
        self.states.remove(&partition);
    }
}
