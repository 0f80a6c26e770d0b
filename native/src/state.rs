//! One partition's state in memory (`streams.usage.engine.state.PartitionState`): the
//! windows of each account (sorted starts, so a read touches only its range), the uid
//! hashes per account and hour slot, and the seq bookkeeping of deltas and snapshots.
//!
//! Compact, as it holds every account-hour of the retention: an account is a number
//! here (its name is kept once), a window's cells one byte string (`fold::encode_cells`,
//! cell keys interned), an account-hour's uids a 16-byte set, and what is dirty or
//! pending is keyed by (account number, slot).

use crate::dedup::{FastMap, FastSet, UidSet};
use crate::fold::{decode_cells, encode_cells, merge_cell_maps, CellKey, Cells, WindowCells};
use crate::wire;
use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// An account-hour, (account number, hour slot) in one word (the restored segments
/// still pending).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Segment(u64);

impl Segment {
    fn new(number: u32, slot: i64) -> Segment {
        Segment((u64::from(number) << 32) | u64::from(short_slot(slot)))
    }

    fn number(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// A slot in four bytes: an hour since 1970 of a measurement's ts, which validation keeps
/// within days of now.
fn short_slot(slot: i64) -> u32 {
    u32::try_from(slot).expect("an hour slot between 1970 and 2459")
}

/// The hour slots of an account that a snapshot round must write: changed since the last
/// round (dirty), or written by a round not yet confirmed. Sorted, four bytes a slot,
/// kept by the account (one entry per account-hour changed since a snapshot).
#[derive(Default)]
struct Marks {
    dirty: Vec<u32>,
    unconfirmed: Vec<u32>,
}

impl Marks {
    fn set_dirty(&mut self, slot: i64) {
        let slot = short_slot(slot);
        if let Err(at) = self.dirty.binary_search(&slot) {
            insert_tight(&mut self.dirty, at, slot);
        }
    }

    fn clear_dirty(&mut self, slot: i64) {
        if let Ok(at) = self.dirty.binary_search(&short_slot(slot)) {
            self.dirty.remove(at);
        }
    }

    /// The slots a round writes now (dirty or unconfirmed); they become unconfirmed.
    fn take_for_round(&mut self) -> Vec<u32> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut round = std::mem::take(&mut self.unconfirmed);
        round.extend(dirty);
        round.sort_unstable();
        round.dedup();
        round.shrink_to_fit();
        self.unconfirmed = round.clone();
        round
    }
}

/// An account's windows in one byte string, sorted by start: per window its start and
/// the length of its cells (varints, 7 bytes for an hour of today), then its cells
/// (`fold::encode_cells`). One allocation per account rather than one per window: the
/// state holds every account-hour of the retention, and many small long-lived
/// allocations among a batch's short-lived ones leave most allocator pages partly used.
#[derive(Default)]
struct Windows(Vec<u8>);

/// What `PartitionState::add_uid` did.
#[derive(Debug, PartialEq, Eq)]
pub enum UidAdded {
    New,
    Duplicate,
    Full,
}

/// JSON bytes a stored byte of a window may become, besides its cell keys (see
/// `PartitionState::segment_size_bound`): per cell of 3 stored bytes or more, ~110 bytes
/// of member names, counts and punctuation (~37 a byte); a stored number of 3 bytes or
/// more, at most ~40 of text (~14 a byte); a window's start, ~30 for 2 bytes or more.
const TEXT_PER_BYTE: usize = 128;
/// A segment document's members besides the account, its uids and its windows.
const SEGMENT_ENVELOPE: usize = 256;

/// One window in `Windows`: where its record lies, its start, its cells.
struct Stored<'a> {
    record: std::ops::Range<usize>,
    start: i64,
    cells: &'a [u8],
}

fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return value;
        }
        shift += 7;
    }
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

impl Windows {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each window, in order.
    fn iter(&self) -> impl Iterator<Item = Stored<'_>> + '_ {
        let bytes = &self.0;
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= bytes.len() {
                return None;
            }
            let begin = at;
            let zigzag = read_varint(bytes, &mut at);
            let start = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
            let len = read_varint(bytes, &mut at) as usize;
            let cells = &bytes[at..at + len];
            at += len;
            Some(Stored {
                record: begin..at,
                start,
                cells,
            })
        })
    }

    fn first_start(&self) -> Option<i64> {
        self.iter().next().map(|window| window.start)
    }

    /// The window starting at `start`: Ok(it), or Err(the offset where it goes).
    fn find(&self, start: i64) -> Result<Stored<'_>, usize> {
        for window in self.iter() {
            if window.start == start {
                return Ok(window);
            }
            if window.start > start {
                return Err(window.record.start);
            }
        }
        Err(self.0.len())
    }

    /// The byte range of the windows starting in `range`.
    fn span(&self, range: std::ops::Range<i64>) -> std::ops::Range<usize> {
        let mut from = self.0.len();
        let mut to = self.0.len();
        for window in self.iter() {
            if window.start >= range.start && from == self.0.len() {
                from = window.record.start;
            }
            if window.start >= range.end {
                to = window.record.start;
                break;
            }
        }
        from..to.max(from)
    }

    fn in_range(&self, range: std::ops::Range<i64>) -> impl Iterator<Item = (i64, &[u8])> + '_ {
        self.iter()
            .skip_while(move |window| window.start < range.start)
            .take_while(move |window| window.start < range.end)
            .map(|window| (window.start, window.cells))
    }

    /// Put `cells` as the window starting at `start` in place of the bytes `replaced`
    /// (an empty range where a new window goes).
    fn put(&mut self, replaced: std::ops::Range<usize>, start: i64, cells: &[u8]) {
        let mut record = Vec::with_capacity(12 + cells.len());
        write_varint(&mut record, ((start << 1) ^ (start >> 63)) as u64);
        write_varint(&mut record, cells.len() as u64);
        record.extend_from_slice(cells);
        let grows = record.len().saturating_sub(replaced.len());
        if self.0.len() + grows > self.0.capacity() {
            self.0.reserve_exact(grows.max(self.0.len() / 8));
        }
        self.0.splice(replaced, record);
    }

    fn remove(&mut self, bytes: std::ops::Range<usize>) {
        self.0.drain(bytes);
        self.shrink();
    }

    /// Keep the windows whose start `keep` accepts.
    fn retain(&mut self, mut keep: impl FnMut(i64) -> bool) {
        let mut kept = Vec::with_capacity(self.0.len());
        for window in self.iter() {
            if keep(window.start) {
                kept.extend_from_slice(&self.0[window.record]);
            }
        }
        self.0 = kept;
        self.shrink();
    }

    fn shrink(&mut self) {
        if self.0.capacity() > self.0.len() + self.0.len() / 4 {
            self.0.shrink_to_fit();
        }
    }
}

/// One account's usage: windows sorted by start, uid sets sorted by slot.
#[derive(Default)]
struct Account {
    name: Box<str>,
    live: bool,
    windows: Windows,
    uids: Vec<(i64, UidSet)>,
    marks: Marks,
}

impl Account {
    fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.uids.is_empty()
    }

    fn uid_slot(&self, slot: i64) -> Result<usize, usize> {
        self.uids.binary_search_by_key(&slot, |(known, _)| *known)
    }
}

/// Cell keys by number (a window's bytes name its cells' keys by number).
#[derive(Default)]
struct KeyTable {
    keys: Vec<CellKey>,
    ids: FastMap<CellKey, u32>,
    // the longest aggregation code and segment of one key, as JSON strings
    widest: usize,
}

impl KeyTable {
    fn id(&mut self, key: &CellKey) -> u32 {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        let id = self.keys.len() as u32;
        let text = wire::json_len(&key.0) + wire::json_len(&key.1);
        self.widest = self.widest.max(text);
        self.keys.push(key.clone());
        self.ids.insert(key.clone(), id);
        id
    }

    fn encode(&mut self, cells: &Cells) -> Box<[u8]> {
        encode_cells(cells, |key| self.id(key))
    }

    fn decode(&self, bytes: &[u8]) -> Cells {
        decode_cells(bytes, &self.keys)
    }
}

#[derive(Default)]
pub struct PartitionState {
    numbers: FastMap<Box<str>, u32>,
    accounts: Vec<Account>,
    free: Vec<u32>,
    keys: KeyTable,
    pub seq: i64,
    pub complete: i64,
    pub floor: i64,
    pending: FastMap<Segment, i64>,
    pub seen: Seen,
    pub newest: i64,
    pub expired: (i64, i64),
}

/// `items.insert(at, item)`, growing a full vector by an eighth rather than doubling it:
/// an account's windows and uid sets grow an hour at a time and are held for the whole
/// retention, so spare room would be a third of them on average.
fn insert_tight<T>(items: &mut Vec<T>, at: usize, item: T) {
    if items.len() == items.capacity() {
        items.reserve_exact((items.len() / 8).max(1));
    }
    items.insert(at, item);
}

pub fn slot_range(slot: i64) -> std::ops::Range<i64> {
    slot * HOUR_MS..(slot + 1) * HOUR_MS
}

impl PartitionState {
    fn number(&self, account: &str) -> Option<u32> {
        self.numbers.get(account).copied()
    }

    fn account(&self, account: &str) -> Option<&Account> {
        self.number(account).map(|n| &self.accounts[n as usize])
    }

    /// The account's number, given one if it has none.
    fn intern(&mut self, account: &str) -> u32 {
        if let Some(number) = self.number(account) {
            return number;
        }
        let fresh = Account {
            name: account.into(),
            live: true,
            ..Account::default()
        };
        let number = match self.free.pop() {
            Some(number) => {
                self.accounts[number as usize] = fresh;
                number
            }
            None => {
                self.accounts.push(fresh);
                (self.accounts.len() - 1) as u32
            }
        };
        self.numbers.insert(account.into(), number);
        number
    }

    fn live(&self) -> impl Iterator<Item = (u32, &Account)> {
        self.accounts
            .iter()
            .enumerate()
            .filter(|(_, account)| account.live)
            .map(|(number, account)| (number as u32, account))
    }

    pub fn hashes(&self, account: &str, slot: i64) -> Option<&UidSet> {
        let account = self.account(account)?;
        account.uid_slot(slot).ok().map(|at| &account.uids[at].1)
    }

    /// Remember a measurement's uid in its account-hour, unless it is there already or
    /// the account-hour holds `limit` uids.
    pub fn add_uid(&mut self, account: &str, slot: i64, uid: u64, limit: usize) -> UidAdded {
        let number = match self.number(account) {
            Some(number) => number,
            None if limit == 0 => return UidAdded::Full,
            None => self.intern(account),
        };
        let known = &mut self.accounts[number as usize];
        let at = match known.uid_slot(slot) {
            Ok(at) => {
                let hashes = &known.uids[at].1;
                if hashes.contains(&uid) {
                    return UidAdded::Duplicate;
                }
                if hashes.len() >= limit {
                    return UidAdded::Full;
                }
                at
            }
            Err(_) if limit == 0 => return UidAdded::Full,
            Err(at) => {
                insert_tight(&mut known.uids, at, (slot, UidSet::default()));
                at
            }
        };
        known.uids[at].1.insert(uid);
        UidAdded::New
    }

    pub fn forget_uids(&mut self, account: &str, slot: i64, hashes: &[u64]) {
        let Some(number) = self.number(account) else {
            return;
        };
        let account = &mut self.accounts[number as usize];
        let Ok(at) = account.uid_slot(slot) else {
            return;
        };
        let known = &mut account.uids[at].1;
        for uid in hashes {
            known.remove(uid);
        }
        if known.is_empty() {
            account.uids.remove(at);
        }
    }

    /// Add one account-hour's share of a delta; its cells are taken over.
    pub fn merge(&mut self, account: &str, slot: i64, windows: WindowCells, hashes: &[u64]) {
        let number = self.intern(account);
        self.merge_into(number, slot, windows, hashes);
    }

    fn merge_into(&mut self, number: u32, slot: i64, windows: WindowCells, hashes: &[u64]) {
        let known = &mut self.accounts[number as usize];
        for (start, cells) in windows {
            if cells.is_empty() {
                continue;
            }
            match known.windows.find(start) {
                Ok(window) => {
                    let replaced = window.record.clone();
                    let mut merged = self.keys.decode(window.cells);
                    merge_cell_maps(&mut merged, cells);
                    let encoded = self.keys.encode(&merged);
                    known.windows.put(replaced, start, &encoded);
                }
                Err(offset) => {
                    let encoded = self.keys.encode(&cells);
                    known.windows.put(offset..offset, start, &encoded);
                }
            }
        }
        if !hashes.is_empty() {
            let at = match known.uid_slot(slot) {
                Ok(at) => at,
                Err(at) => {
                    insert_tight(&mut known.uids, at, (slot, UidSet::default()));
                    at
                }
            };
            known.uids[at].1.extend(hashes.iter().copied());
        }
        self.accounts[number as usize].marks.set_dirty(slot);
    }

    /// Set one segment to exactly this content (a snapshot record): it is not dirty.
    pub fn replace(&mut self, account: &str, slot: i64, windows: WindowCells, hashes: &[u64]) {
        let number = self.intern(account);
        self.remove_segment(number, slot);
        self.merge_into(number, slot, windows, hashes);
        self.accounts[number as usize].marks.clear_dirty(slot);
    }

    /// Delete one segment: its windows and its uids.
    pub fn remove(&mut self, account: &str, slot: i64) {
        let number = self.intern(account);
        self.remove_segment(number, slot);
    }

    fn remove_segment(&mut self, number: u32, slot: i64) {
        let known = &mut self.accounts[number as usize];
        let span = known.windows.span(slot_range(slot));
        known.windows.remove(span);
        if let Ok(at) = known.uid_slot(slot) {
            known.uids.remove(at);
        }
        self.accounts[number as usize].marks.set_dirty(slot);
    }

    /// A tombstone: the segment is gone, neither dirty nor pending.
    pub fn forget_segment(&mut self, account: &str, slot: i64) {
        let number = self.intern(account);
        self.remove_segment(number, slot);
        self.accounts[number as usize].marks.clear_dirty(slot);
        self.pending.remove(&Segment::new(number, slot));
    }

    /// A segment restored at `seq`: deltas up to it are in it already.
    pub fn set_pending(&mut self, account: &str, slot: i64, seq: i64) {
        let number = self.intern(account);
        self.pending.insert(Segment::new(number, slot), seq);
    }

    /// The windows of one segment.
    /// At least the bytes of an account-hour's segment document (`wire::segment_value`),
    /// read from the size of its stored windows and the number of its uids alone.
    ///
    /// Every stored byte is written as at most `TEXT_PER_BYTE` bytes of JSON (a number's
    /// at most 3 stored bytes as ~40 of text, a distinct value's byte as a 6-byte escape),
    /// and each cell (3 stored bytes or more) and window (2 or more) adds its key and
    /// member names, which the widest key bounds. The envelope adds at most
    /// `SEGMENT_ENVELOPE` and the account's JSON.
    pub fn segment_size_bound(&self, account: &str, slot: i64) -> usize {
        let Some(known) = self.account(account) else {
            return 0;
        };
        let uids = known.uid_slot(slot).map_or(0, |at| known.uids[at].1.len());
        let range = slot_range(slot);
        let stored: usize = known
            .windows
            .iter()
            .skip_while(|window| window.start < range.start)
            .take_while(|window| window.start < range.end)
            .map(|window| window.record.len())
            .sum();
        SEGMENT_ENVELOPE
            + wire::json_len(account)
            + wire::uids_text(uids)
            + stored * (TEXT_PER_BYTE + self.keys.widest)
    }

    pub fn segment_windows(&self, account: &str, slot: i64) -> Vec<(i64, Cells)> {
        self.windows_in(account, slot_range(slot))
    }

    /// The windows of an account starting in `range`, in order.
    pub fn windows_in(&self, account: &str, range: std::ops::Range<i64>) -> Vec<(i64, Cells)> {
        let Some(known) = self.account(account) else {
            return Vec::new();
        };
        known
            .windows
            .in_range(range)
            .map(|(start, bytes)| (start, self.keys.decode(bytes)))
            .collect()
    }

    /// The accounts with a window starting in `range`.
    pub fn accounts_in(&self, range: std::ops::Range<i64>) -> impl Iterator<Item = &str> {
        self.live()
            .filter(move |(_, account)| account.windows.in_range(range.clone()).next().is_some())
            .map(|(_, account)| &*account.name)
    }

    /// Account-hours with usage.
    pub fn account_hours(&self) -> usize {
        self.live()
            .map(|(_, account)| {
                account
                    .windows
                    .iter()
                    .map(|window| window.start.div_euclid(HOUR_MS))
                    .collect::<BTreeSet<_>>()
                    .len()
            })
            .sum()
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
                .number(account)
                .is_some_and(|number| self.skips_segment(Segment::new(number, slot), seq))
    }

    fn skips_segment(&self, segment: Segment, seq: i64) -> bool {
        !self.pending.is_empty() && self.pending.get(&segment).copied().unwrap_or(0) >= seq
    }

    pub fn raise_floor(&mut self, floor: i64) {
        self.floor = self.floor.max(floor);
        self.seq = self.seq.max(self.floor);
        let floor = self.floor;
        self.pending.retain(|_, seq| *seq > floor);
    }

    pub fn expire(&mut self, seq: i64, uids_before: i64, windows_before: i64) {
        let limit = windows_before * HOUR_MS;
        for number in 0..self.accounts.len() {
            let known = &self.accounts[number];
            let old_uids = known
                .uids
                .first()
                .is_some_and(|(slot, _)| *slot < uids_before);
            let old_windows = known
                .windows
                .first_start()
                .is_some_and(|start| start < limit);
            if !known.live || !(old_uids || old_windows) {
                continue;
            }
            let number = number as u32;
            let mut gone: Vec<i64> = Vec::new();
            let mut uids = std::mem::take(&mut self.accounts[number as usize].uids);
            uids.retain(|(slot, _)| {
                let keep =
                    *slot >= uids_before || self.skips_segment(Segment::new(number, *slot), seq);
                if !keep {
                    gone.push(*slot);
                }
                keep
            });
            let mut windows = std::mem::take(&mut self.accounts[number as usize].windows);
            windows.retain(|start| {
                let slot = start.div_euclid(HOUR_MS);
                let keep = start >= limit || self.skips_segment(Segment::new(number, slot), seq);
                if !keep {
                    gone.push(slot);
                }
                keep
            });
            let known = &mut self.accounts[number as usize];
            known.uids = uids;
            known.windows = windows;
            for slot in gone {
                self.accounts[number as usize].marks.set_dirty(slot);
            }
        }
        self.expired = (
            self.expired.0.max(uids_before),
            self.expired.1.max(windows_before),
        );
    }

    pub fn has_expired(&self, uids_before: i64, windows_before: i64) -> bool {
        let limit = windows_before * HOUR_MS;
        self.live().any(|(_, account)| {
            account
                .uids
                .first()
                .is_some_and(|(slot, _)| *slot < uids_before)
                || account
                    .windows
                    .first_start()
                    .is_some_and(|start| start < limit)
        })
    }

    /// The segments a snapshot round writes (dirty, or written by a round not yet
    /// confirmed), by account and slot; they stay unconfirmed until `confirmed`.
    pub fn snapshot_segments(&mut self) -> Vec<(String, i64)> {
        let mut segments: Vec<(String, i64)> = Vec::new();
        for known in &mut self.accounts {
            if known.marks.dirty.is_empty() && known.marks.unconfirmed.is_empty() {
                continue;
            }
            for slot in known.marks.take_for_round() {
                segments.push((known.name.to_string(), i64::from(slot)));
            }
        }
        segments.sort();
        segments
    }

    /// A snapshot round is written: accounts left with nothing give their number back.
    pub fn confirmed(&mut self) {
        let pending: FastSet<u32> = self
            .pending
            .keys()
            .map(|segment| segment.number())
            .collect();
        for number in 0..self.accounts.len() {
            let known = &mut self.accounts[number];
            known.marks.unconfirmed = Vec::new();
            let held = !known.marks.dirty.is_empty() || pending.contains(&(number as u32));
            if !known.live || !known.is_empty() || held {
                continue;
            }
            self.numbers.remove(&known.name);
            *known = Account::default();
            self.free.push(number as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::{Cell, Parts};
    use std::sync::Arc;

    fn usage(start: i64, calls: i64) -> WindowCells {
        let mut cells = Cells::new();
        let key: CellKey = (Arc::from("calls"), Arc::from(""));
        let parts = Parts {
            sum: Some(crate::dec::Dec::from_i64(calls)),
            ..Parts::default()
        };
        cells.insert(key, Cell::new(1, parts));
        let mut windows = WindowCells::new();
        windows.insert(start, cells);
        windows
    }

    fn calls(state: &PartitionState, account: &str, slot: i64) -> Vec<(i64, String)> {
        state
            .segment_windows(account, slot)
            .iter()
            .flat_map(|(start, cells)| {
                cells
                    .iter()
                    .map(|(_, cell)| (*start, cell.sum().unwrap().canonical_text()))
            })
            .collect()
    }

    #[test]
    fn an_accounts_windows_stay_sorted_in_one_byte_string_through_puts_removals_and_expiry() {
        let mut windows = Windows::default();
        let starts = |windows: &Windows| -> Vec<(i64, Vec<u8>)> {
            windows
                .iter()
                .map(|w| (w.start, w.cells.to_vec()))
                .collect()
        };
        let long = vec![3u8; 300]; // a length past one varint byte
        let today = 1_794_960_000_000; // a start of today: a six-byte varint
        for (start, cells) in [(today, long.clone()), (-10, vec![1]), (20, vec![])] {
            let offset = windows.find(start).err().unwrap();
            windows.put(offset..offset, start, &cells);
        }
        assert_eq!(
            starts(&windows),
            vec![(-10, vec![1]), (20, vec![]), (today, long.clone())]
        );
        let replaced = windows.find(20).ok().unwrap().record;
        windows.put(replaced, 20, &[2, 2, 2]);
        assert_eq!(windows.find(20).ok().unwrap().cells, &[2, 2, 2]);
        assert_eq!(
            windows
                .in_range(15..today + 1)
                .map(|(s, _)| s)
                .collect::<Vec<_>>(),
            vec![20, today]
        );
        assert!(windows.in_range(today + 1..today + 99).next().is_none());
        windows.remove(windows.span(20..today));
        assert_eq!(starts(&windows), vec![(-10, vec![1]), (today, long)]);
        windows.retain(|start| start > -10);
        assert_eq!(windows.first_start(), Some(today));
        windows.remove(windows.span(-100..today + 1));
        assert!(windows.is_empty() && windows.find(5).err() == Some(0));
    }

    #[test]
    fn merges_add_into_an_accounts_encoded_windows_and_removal_empties_them() {
        let mut state = PartitionState::default();
        state.merge("ann", 1, usage(HOUR_MS, 2), &[5]);
        state.merge("ann", 1, usage(HOUR_MS, 3), &[6]);
        state.merge("ann", 1, usage(HOUR_MS + 60_000, 4), &[]);
        state.merge("bob", 2, usage(2 * HOUR_MS, 1), &[5]);
        assert_eq!(
            calls(&state, "ann", 1),
            vec![
                (HOUR_MS, "5".to_string()),
                (HOUR_MS + 60_000, "4".to_string())
            ]
        );
        assert_eq!(state.segment_hashes("ann", 1), vec![5, 6]);
        assert_eq!(state.account_hours(), 2);
        assert_eq!(
            state.accounts_in(0..2 * HOUR_MS).collect::<Vec<_>>(),
            vec!["ann"]
        );
        state.remove("ann", 1);
        assert!(calls(&state, "ann", 1).is_empty() && state.hashes("ann", 1).is_none());
        assert_eq!(
            calls(&state, "bob", 2),
            vec![(2 * HOUR_MS, "1".to_string())]
        );
    }

    #[test]
    fn an_account_left_with_nothing_gives_its_number_back_once_its_tombstone_is_written() {
        let mut state = PartitionState::default();
        state.merge("ann", 1, usage(HOUR_MS, 2), &[5]);
        state.remove("ann", 1);
        assert_eq!(state.snapshot_segments(), vec![("ann".to_string(), 1)]);
        state.confirmed();
        assert!(state.number("ann").is_none() && state.free == vec![0]);
        state.merge("bob", 3, usage(3 * HOUR_MS, 7), &[9]);
        assert_eq!(state.number("bob"), Some(0));
        assert_eq!(state.snapshot_segments(), vec![("bob".to_string(), 3)]);
        assert_eq!(
            calls(&state, "bob", 3),
            vec![(3 * HOUR_MS, "7".to_string())]
        );
    }
}
