//! One partition's state in memory (`streams.usage.engine.state.PartitionState`): the
//! windows of each account (sorted starts, so a read touches only its range), the uid
//! hashes per hour slot and account, and the seq bookkeeping of deltas and snapshots.

use crate::dedup::{FastMap, UidSet};
use crate::fold::{merge_windows, Cells, WindowCells};
use std::collections::{BTreeMap, HashMap, HashSet};

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

pub type SegmentKey = (String, i64);

/// Keys of delta messages in the order first seen (a Python dict of bytes -> bool).
#[derive(Default)]
pub struct Seen {
    map: HashMap<Vec<u8>, (u64, bool)>,
    order: BTreeMap<u64, Vec<u8>>,
    next: u64,
}

impl Seen {
    pub fn get(&self, key: &[u8]) -> bool {
        self.map.get(key).is_some_and(|(_, applied)| *applied)
    }

    pub fn set(&mut self, key: &[u8], applied: bool) {
        if let Some(entry) = self.map.get_mut(key) {
            entry.1 = applied;
            return;
        }
        self.insert_new(key, applied);
    }

    fn insert_new(&mut self, key: &[u8], applied: bool) {
        self.map.insert(key.to_vec(), (self.next, applied));
        self.order.insert(self.next, key.to_vec());
        self.next += 1;
    }

    pub fn setdefault(&mut self, key: &[u8], applied: bool) {
        if !self.map.contains_key(key) {
            self.insert_new(key, applied);
        }
    }

    pub fn pop(&mut self, key: &[u8]) {
        if let Some((at, _)) = self.map.remove(key) {
            self.order.remove(&at);
        }
    }

    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.order.values().cloned().collect()
    }
}

#[derive(Default)]
pub struct PartitionState {
    pub accounts: FastMap<String, WindowCells>,
    pub uids: BTreeMap<i64, FastMap<String, UidSet>>,
    pub seq: i64,
    pub complete: i64,
    pub floor: i64,
    pub pending: HashMap<SegmentKey, i64>,
    pub dirty: HashSet<SegmentKey>,
    pub unconfirmed: HashSet<SegmentKey>,
    pub seen: Seen,
    pub newest: i64,
    pub expired: (i64, i64),
}

pub fn slot_range(slot: i64) -> std::ops::Range<i64> {
    slot * HOUR_MS..(slot + 1) * HOUR_MS
}

impl PartitionState {
    pub fn hashes(&self, account: &str, slot: i64) -> Option<&UidSet> {
        self.uids
            .get(&slot)
            .and_then(|accounts| accounts.get(account))
    }

    pub fn hashes_mut(&mut self, account: &str, slot: i64) -> &mut UidSet {
        let accounts = self.uids.entry(slot).or_default();
        if !accounts.contains_key(account) {
            accounts.insert(account.to_string(), UidSet::default());
        }
        accounts.get_mut(account).expect("inserted above")
    }

    pub fn forget_uids(&mut self, account: &str, slot: i64, hashes: &[u64]) {
        let Some(known) = self.uids.get_mut(&slot).and_then(|a| a.get_mut(account)) else {
            return;
        };
        for uid in hashes {
            known.remove(uid);
        }
        if known.is_empty() {
            self.drop_hashes(account, slot);
        }
    }

    fn drop_hashes(&mut self, account: &str, slot: i64) {
        if let Some(accounts) = self.uids.get_mut(&slot) {
            accounts.remove(account);
            if accounts.is_empty() {
                self.uids.remove(&slot);
            }
        }
    }

    /// Add one account-hour's share of a delta; its cells are taken over.
    pub fn merge(&mut self, account: &str, slot: i64, windows: WindowCells, hashes: &[u64]) {
        if !windows.is_empty() {
            match self.accounts.get_mut(account) {
                Some(known) => merge_windows(known, windows),
                None => {
                    self.accounts.insert(account.to_string(), windows);
                }
            }
        }
        if !hashes.is_empty() {
            self.hashes_mut(account, slot)
                .extend(hashes.iter().copied());
        }
        self.dirty.insert((account.to_string(), slot));
    }

    /// Set one segment to exactly this content (a snapshot record): it is not dirty.
    pub fn replace(&mut self, account: &str, slot: i64, windows: WindowCells, hashes: &[u64]) {
        self.remove(account, slot);
        self.merge(account, slot, windows, hashes);
        self.dirty.remove(&(account.to_string(), slot));
    }

    /// Delete one segment: its windows and its uids.
    pub fn remove(&mut self, account: &str, slot: i64) {
        if let Some(windows) = self.accounts.get_mut(account) {
            let gone: Vec<i64> = windows
                .range(slot_range(slot))
                .map(|(start, _)| *start)
                .collect();
            for start in gone {
                windows.remove(&start);
            }
            if windows.is_empty() {
                self.accounts.remove(account);
            }
        }
        self.drop_hashes(account, slot);
        self.dirty.insert((account.to_string(), slot));
    }

    /// The windows of one segment.
    pub fn segment_windows(&self, account: &str, slot: i64) -> Vec<(&i64, &Cells)> {
        match self.accounts.get(account) {
            None => Vec::new(),
            Some(windows) => windows.range(slot_range(slot)).collect(),
        }
    }

    pub fn segment_hashes(&self, account: &str, slot: i64) -> Vec<u64> {
        self.hashes(account, slot)
            .map(UidSet::to_vec)
            .unwrap_or_default()
    }

    pub fn applied(&mut self, seq: i64, chunk: i64, chunks: i64) {
        self.complete = self
            .complete
            .max(if chunk == chunks - 1 { seq } else { seq - 1 });
    }

    pub fn skips(&self, account: &str, slot: i64, seq: i64) -> bool {
        !self.pending.is_empty()
            && self
                .pending
                .get(&(account.to_string(), slot))
                .copied()
                .unwrap_or(0)
                >= seq
    }

    pub fn raise_floor(&mut self, floor: i64) {
        self.floor = self.floor.max(floor);
        self.seq = self.seq.max(self.floor);
        let floor = self.floor;
        self.pending.retain(|_, seq| *seq > floor);
    }

    pub fn expire(&mut self, seq: i64, uids_before: i64, windows_before: i64) {
        let slots: Vec<i64> = self
            .uids
            .range(..uids_before)
            .map(|(slot, _)| *slot)
            .collect();
        for slot in slots {
            let accounts: Vec<String> = self.uids[&slot].keys().cloned().collect();
            for account in accounts {
                if !self.skips(&account, slot, seq) {
                    self.drop_hashes(&account, slot);
                    self.dirty.insert((account, slot));
                }
            }
        }
        let limit = windows_before * HOUR_MS;
        let names: Vec<String> = self.accounts.keys().cloned().collect();
        for account in names {
            let windows = &self.accounts[&account];
            if windows.keys().next().is_none_or(|first| *first >= limit) {
                continue;
            }
            let gone: Vec<i64> = windows
                .range(..limit)
                .map(|(start, _)| *start)
                .filter(|start| !self.skips(&account, start.div_euclid(HOUR_MS), seq))
                .collect();
            let windows = self.accounts.get_mut(&account).expect("present");
            for start in &gone {
                windows.remove(start);
            }
            let empty = windows.is_empty();
            for start in gone {
                self.dirty
                    .insert((account.clone(), start.div_euclid(HOUR_MS)));
            }
            if empty {
                self.accounts.remove(&account);
            }
        }
        self.expired = (
            self.expired.0.max(uids_before),
            self.expired.1.max(windows_before),
        );
    }

    pub fn has_expired(&self, uids_before: i64, windows_before: i64) -> bool {
        if self.uids.range(..uids_before).next().is_some() {
            return true;
        }
        let limit = windows_before * HOUR_MS;
        self.accounts
            .values()
            .any(|w| w.keys().next().is_some_and(|first| *first < limit))
    }
}
