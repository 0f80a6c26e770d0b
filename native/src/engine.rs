//! The engine and `process`: judge every measurement of a batch (decode, validate,
//! placement, locks, de-duplication), fold the new ones into pieces per account-hour,
//! bound the pieces, then per partition one seq of delta messages and the pieces merged
//! into the state. `streams.usage.engine.reference` step for step, in the same order, so
//! rejections, deltas and state come out the same.
//!
//! A panic costs the measurement it happened on (a rejection with the reason), never the
//! batch: validation and folding run under `catch_unwind`.

use crate::decode::{parse, Json};
use crate::dedup::{partition_for, uid_hash};
use crate::fold::{accumulate, Cells, Plan, Values, WindowCells};
use crate::state::{PartitionState, UidAdded, HOUR_MS};
use crate::validate::{py_repr, validate, Override, Rules, Valid, Verdict};
use crate::wire::{self, DeltaHeader, Entry};
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub const SEGMENT_ENVELOPE: usize = 256;

pub struct Config {
    pub partitions: u32,
    pub past_ms: i64,
    pub retention_days: i64,
    pub max_uids_per_slot: usize,
    pub max_delta_bytes: usize,
    pub max_segment_bytes: usize,
}

pub struct Engine {
    pub config: Config,
    pub rules: Option<Rules>,
    pub plan: Plan,
    pub boundaries: HashMap<String, Vec<i64>>,
    pub locked: HashMap<String, Vec<(i64, i64, String)>>,
    pub states: BTreeMap<i64, PartitionState>,
    /// test-only: panic while judging ("validate") or folding ("fold") this uid, or
    /// committing ("commit") this account
    pub panic_on: Option<(String, String)>,
}

pub struct Message<'a> {
    pub value: Option<&'a [u8]>,
    pub partition: i64,
}

/// What Python decided about a message this engine could not read.
pub enum MessageOverride {
    Reject(String),
    Replace(Vec<u8>),
}

pub struct DeltaOut {
    pub partition: i64,
    pub seq: i64,
    pub chunk: i64,
    pub chunks: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

pub struct RejectedOut {
    pub message: usize,
    pub index: Option<usize>,
    pub field: String,
    pub reason: String,
}

#[derive(Default)]
pub struct Processed {
    pub deltas: Vec<DeltaOut>,
    pub rejected: Vec<RejectedOut>,
    pub forwards: Vec<(i64, usize, usize, String)>,
    pub accepted: usize,
    pub duplicates: usize,
    pub newest: i64,
    /// how many of `rejected` are verdicts on measurements, in message order; the rest
    /// are pieces refused for their size, in (partition, account, hour) order
    pub judged: usize,
}

pub enum Outcome {
    /// Python must decide these measurements (message, index) and messages first.
    Help(Vec<(usize, usize)>, Vec<usize>),
    Done(Processed),
}

#[derive(Default)]
struct Piece {
    windows: WindowCells,
    uids: Vec<u64>,
    members: Vec<(usize, usize)>,
    newest: i64,
}

/// `{:,}` of Python.
pub fn thousands(n: usize) -> String {
    let text = n.to_string();
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i > 0 && (text.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_string()
    };
    format!(
        "internal error: PanicException({})",
        py_repr(&text).unwrap_or_else(|| "'…'".into())
    )
}

/// A reason that quotes an account: Python words it when the account is not plain ASCII
/// (the marker "\0<kind>|<numbers>" is replaced by the caller).
fn account_reason(
    account: &str,
    kind: &str,
    numbers: &[usize],
    words: impl Fn(&str) -> String,
) -> String {
    match py_repr(account) {
        Some(quoted) => words(&quoted),
        None => {
            let numbers: Vec<String> = numbers.iter().map(|n| n.to_string()).collect();
            format!("\0{}|{}", kind, numbers.join("|"))
        }
    }
}

impl Engine {
    pub fn new(config: Config) -> Engine {
        Engine {
            config,
            rules: None,
            plan: Plan::default(),
            boundaries: HashMap::new(),
            locked: HashMap::new(),
            states: BTreeMap::new(),
            panic_on: None,
        }
    }

    pub fn partition_of(&self, account: &str) -> i64 {
        partition_for(account, self.config.partitions) as i64
    }

    fn window(&self, account: &str, ts: i64) -> i64 {
        let hour = ts - ts.rem_euclid(HOUR_MS);
        let Some(known) = self.boundaries.get(account) else {
            return hour;
        };
        let index = known.partition_point(|b| *b <= ts);
        if index > 0 && known[index - 1] > hour {
            known[index - 1]
        } else {
            hour
        }
    }

    fn hook(&self, stage: &str, uid: &str) {
        if let Some((at, target)) = &self.panic_on {
            if at == stage && target == uid {
                panic!("{} failed on purpose for uid {}", stage, uid);
            }
        }
    }

    pub fn process(
        &mut self,
        messages: &[Message],
        now_ms: i64,
        decided: &HashMap<(usize, usize), Override>,
        replaced: &HashMap<usize, MessageOverride>,
    ) -> Result<Outcome, String> {
        let Some(rules) = self.rules.as_ref() else {
            return Err("the engine has no catalog yet: call set_catalog() first".into());
        };
        // 1. read every message and judge every measurement on its own (no state yet);
        // a message's decoded tree is dropped once its measurements are judged (a verdict
        // borrows the message's bytes), so a batch never holds every tree at once
        let mut shapes: Vec<Result<usize, String>> = Vec::with_capacity(messages.len());
        let mut verdicts: Vec<Vec<Verdict>> = Vec::with_capacity(messages.len());
        let mut unread = Vec::new();
        let mut undecided = Vec::new();
        for (number, message) in messages.iter().enumerate() {
            let value = match replaced.get(&number) {
                Some(MessageOverride::Reject(reason)) => {
                    shapes.push(Err(reason.clone()));
                    verdicts.push(Vec::new());
                    continue;
                }
                Some(MessageOverride::Replace(bytes)) => Some(bytes.as_slice()),
                None => message.value,
            };
            let document = match value {
                None | Some(b"") => Err("empty message".to_string()),
                Some(bytes) => match parse(bytes) {
                    Ok(document) => Ok(document),
                    Err(error) if replaced.contains_key(&number) => Err(format!(
                        "not JSON: the native engine cannot read it ({})",
                        error
                    )),
                    Err(_) => {
                        unread.push(number);
                        Err(String::new())
                    }
                },
            };
            let items = match &document {
                Err(reason) => Err(reason.clone()),
                Ok(document @ Json::Obj(_)) => match document.get("measurements") {
                    None | Some(Json::Null) => Ok(std::slice::from_ref(document)),
                    Some(Json::Arr(items)) => Ok(items.as_slice()),
                    Some(_) => Err("measurements must be a list".to_string()),
                },
                Ok(_) => Err(
                    "expected a measurement object or a {\"measurements\": [...]} envelope".into(),
                ),
            };
            let items = match items {
                Err(reason) => {
                    shapes.push(Err(reason));
                    verdicts.push(Vec::new());
                    continue;
                }
                Ok(items) => items,
            };
            shapes.push(Ok(items.len()));
            let mut judged = Vec::with_capacity(items.len());
            for (index, raw) in items.iter().enumerate() {
                let verdict = catch_unwind(AssertUnwindSafe(|| {
                    if let Some(uid) = raw.get("uid").and_then(|u| u.as_str()) {
                        self.hook("validate", uid);
                    }
                    let verdict = if decided.is_empty() {
                        None
                    } else {
                        decided.get(&(number, index))
                    };
                    validate(raw, now_ms, rules, verdict)
                }))
                .unwrap_or_else(|payload| {
                    Verdict::Reject("measurement".into(), panic_text(payload))
                });
                if matches!(verdict, Verdict::Undecided) {
                    undecided.push((number, index));
                }
                judged.push(verdict);
            }
            verdicts.push(judged);
        }
        if !undecided.is_empty() || !unread.is_empty() {
            let unread = unread
                .into_iter()
                .filter(|n| !replaced.contains_key(n))
                .collect::<Vec<_>>();
            let undecided = undecided
                .into_iter()
                .filter(|key| !decided.contains_key(key))
                .collect::<Vec<_>>();
            if !undecided.is_empty() || !unread.is_empty() {
                return Ok(Outcome::Help(undecided, unread));
            }
        }
        // 2. placement, locks, de-duplication, fold into pieces
        let mut out = Processed::default();
        // keyed by the account as the batch wrote it: no copy per measurement
        let mut pieces: BTreeMap<(i64, &str, i64), Piece> = BTreeMap::new();
        for (number, shape) in shapes.iter().enumerate() {
            let items = match shape {
                Err(reason) => {
                    out.rejected.push(RejectedOut {
                        message: number,
                        index: None,
                        field: "value".into(),
                        reason: reason.clone(),
                    });
                    continue;
                }
                Ok(items) => *items,
            };
            for index in 0..items {
                let verdict = &verdicts[number][index];
                let valid = match verdict {
                    Verdict::Valid(valid) => valid,
                    Verdict::Reject(field, reason) => {
                        out.rejected.push(RejectedOut {
                            message: number,
                            index: Some(index),
                            field: field.clone(),
                            reason: reason.clone(),
                        });
                        continue;
                    }
                    Verdict::Undecided => {
                        out.rejected.push(RejectedOut {
                            message: number,
                            index: Some(index),
                            field: "measurement".into(),
                            reason: "internal error: the native engine could not judge it".into(),
                        });
                        continue;
                    }
                };
                if let Some((field, reason)) = self.judge(
                    valid,
                    number,
                    index,
                    messages[number].partition,
                    &mut pieces,
                    &verdicts,
                    &mut out,
                ) {
                    out.rejected.push(RejectedOut {
                        message: number,
                        index: Some(index),
                        field,
                        reason,
                    });
                }
            }
        }
        // 3. bound the pieces, then per partition one seq of deltas, merged into the state
        out.judged = out.rejected.len();
        let mut accepted: BTreeMap<i64, Vec<(Entry, WindowCells, i64)>> = BTreeMap::new();
        for ((partition, account, slot), piece) in pieces {
            if piece.members.is_empty() {
                continue;
            }
            let encoded = wire::encode_piece(&piece.windows, &mut piece.uids.clone());
            if let Some(reason) = self.refusal(partition, account, slot, &encoded) {
                let state = self.states.entry(partition).or_default();
                state.forget_uids(account, slot, &piece.uids);
                for (message, index) in piece.members {
                    out.rejected.push(RejectedOut {
                        message,
                        index: Some(index),
                        field: "measurement".into(),
                        reason: reason.clone(),
                    });
                }
                continue;
            }
            out.accepted += piece.members.len();
            let entry = Entry {
                account: account.to_string(),
                slot,
                piece: encoded,
            };
            accepted
                .entry(partition)
                .or_default()
                .push((entry, piece.windows, piece.newest));
        }
        for (partition, items) in accepted {
            out.deltas.extend(self.commit(partition, items));
        }
        Ok(Outcome::Done(out))
    }

    #[allow(clippy::too_many_arguments)]
    fn judge<'v>(
        &mut self,
        valid: &'v Valid<'_>,
        number: usize,
        index: usize,
        read_from: i64,
        pieces: &mut BTreeMap<(i64, &'v str, i64), Piece>,
        verdicts: &[Vec<Verdict>],
        out: &mut Processed,
    ) -> Option<(String, String)> {
        let account: &'v str = &valid.account;
        let ts = valid.ts;
        let partition = self.partition_of(account);
        if partition != read_from {
            out.forwards
                .push((partition, number, index, account.to_string()));
            return None;
        }
        if let Some(periods) = self.locked.get(account) {
            for (start, end, reason) in periods {
                if *start <= ts && ts < *end {
                    return Some(("ts".into(), reason.clone()));
                }
            }
        }
        let slot = ts.div_euclid(HOUR_MS);
        let limit = self.config.max_uids_per_slot;
        let uid = uid_hash(&valid.meter, &valid.uid);
        let state = self.states.entry(partition).or_default();
        match state.add_uid(account, slot, uid, limit) {
            UidAdded::New => {}
            UidAdded::Duplicate => {
                out.duplicates += 1;
                return None;
            }
            UidAdded::Full => {
                let reason = account_reason(account, "full", &[limit], |quoted| {
                    format!(
                    "account {} has more than {} measurements in this hour: its de-duplication memory is full",
                    quoted,
                    thousands(limit)
                )
                });
                return Some(("ts".into(), reason));
            }
        }
        out.newest = out.newest.max(ts);
        let piece = pieces.entry((partition, account, slot)).or_default();
        piece.members.push((number, index));
        piece.uids.push(uid);
        piece.newest = piece.newest.max(ts);
        let folded = catch_unwind(AssertUnwindSafe(|| self.fold(piece, valid)));
        if let Err(payload) = folded {
            let last = piece.members.len() - 1;
            self.unfold(
                piece,
                partition,
                account,
                slot,
                last,
                panic_text(payload),
                verdicts,
                out,
            );
        }
        None
    }

    fn fold(&self, piece: &mut Piece, valid: &Valid) {
        let Some(targets) = self.plan.get(valid.meter.as_ref()) else {
            return;
        };
        if targets.is_empty() {
            return;
        }
        self.hook("fold", &valid.uid);
        let window = self.window(&valid.account, valid.ts);
        // room for every cell this meter feeds: a window's cells are kept as they are
        let needed: usize = targets.iter().map(|target| target.cells.len()).sum();
        let cells = piece
            .windows
            .entry(window)
            .or_insert_with(|| Cells::with_capacity(needed));
        let values = Values {
            numbers: &valid.numbers,
            strings: &valid.strings,
            ts: valid.ts,
        };
        accumulate(targets, cells, &values);
        if cells.is_empty() {
            piece.windows.remove(&window);
        }
    }

    /// Take a measurement that failed to fold out of its piece, fold the piece again from
    /// its other measurements: it is dead-lettered and its uid forgotten.
    #[allow(clippy::too_many_arguments)]
    fn unfold(
        &mut self,
        piece: &mut Piece,
        partition: i64,
        account: &str,
        slot: i64,
        mut failed: usize,
        mut reason: String,
        verdicts: &[Vec<Verdict>],
        out: &mut Processed,
    ) {
        loop {
            let (message, index) = piece.members.remove(failed);
            let uid = piece.uids.remove(failed);
            self.states
                .entry(partition)
                .or_default()
                .forget_uids(account, slot, &[uid]);
            out.rejected.push(RejectedOut {
                message,
                index: Some(index),
                field: "measurement".into(),
                reason: reason.clone(),
            });
            piece.windows = WindowCells::new();
            let mut again = None;
            for (at, (message, index)) in piece.members.clone().into_iter().enumerate() {
                let Verdict::Valid(valid) = &verdicts[message][index] else {
                    continue;
                };
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.fold(piece, valid))) {
                    again = Some((at, panic_text(payload)));
                    break;
                }
            }
            match again {
                None => return,
                Some((at, text)) => {
                    failed = at;
                    reason = text;
                }
            }
        }
    }

    /// Why an account-hour's piece may not be merged (`ReferenceEngine._refusal`): it would
    /// not fit a delta message, or it would grow its segment past a snapshot record.
    fn refusal(
        &mut self,
        partition: i64,
        account: &str,
        slot: i64,
        piece: &[u8],
    ) -> Option<String> {
        let key = wire::json_len(account);
        let needed = wire::ENVELOPE_BYTES + wire::entry_bytes(key, slot, piece.len());
        let max_delta = self.config.max_delta_bytes;
        if needed > max_delta {
            return Some(account_reason(
                account,
                "delta",
                &[needed, (slot * HOUR_MS) as usize],
                |quoted| {
                    format!(
                    "the usage of account {} for the hour starting {} (epoch ms) in this batch would take {} bytes of a delta message, more than the {} one Kafka message holds: not counted",
                    quoted,
                    slot * HOUR_MS,
                    thousands(needed),
                    thousands(max_delta)
                )
                },
            ));
        }
        let state = self.states.entry(partition).or_default();
        let max_segment = self.config.max_segment_bytes;
        // the segment's exact size is a document written in full: only when its bound
        // from the stored bytes does not already fit
        if state.segment_size_bound(account, slot) + piece.len() <= max_segment {
            return None;
        }
        let exact = segment_size(state, partition, account, slot, state.seq + 1);
        if exact + piece.len() <= max_segment {
            return None;
        }
        let grown = exact + piece.len();
        Some(account_reason(
            account,
            "segment",
            &[grown, (slot * HOUR_MS) as usize],
            |quoted| {
                format!(
                "the usage record of account {} for the hour starting {} (epoch ms) would grow to {} bytes, more than the {} one Kafka message holds: not counted",
                quoted,
                slot * HOUR_MS,
                thousands(grown),
                thousands(max_segment)
            )
            },
        ))
    }

    fn commit(&mut self, partition: i64, items: Vec<(Entry, WindowCells, i64)>) -> Vec<DeltaOut> {
        for (entry, _, _) in &items {
            self.hook("commit", &entry.account);
        }
        let budget = self.config.max_delta_bytes;
        let state = self.states.entry(partition).or_default();
        let seq = state.seq + 1;
        let newest = items
            .iter()
            .map(|(_, _, newest)| *newest)
            .fold(state.newest, i64::max);
        let mut entries = Vec::with_capacity(items.len());
        let mut windows = Vec::with_capacity(items.len());
        for (entry, cells, _) in items {
            entries.push(entry);
            windows.push(cells);
        }
        let chunks = wire::pack(&entries, budget);
        let count = chunks.len() as i64;
        let mut deltas = Vec::with_capacity(chunks.len());
        for (chunk, members) in chunks.iter().enumerate() {
            let header = DeltaHeader {
                partition,
                seq,
                chunk: chunk as i64,
                chunks: count,
                newest,
                expire: None,
            };
            let chosen: Vec<&Entry> = members.iter().map(|at| &entries[*at]).collect();
            let key = wire::delta_key(partition, seq, chunk as i64);
            let value = wire::delta_value(&header, &chosen);
            state.seen.set(&key, true);
            deltas.push(DeltaOut {
                partition,
                seq,
                chunk: chunk as i64,
                chunks: count,
                key,
                value,
            });
        }
        for (entry, cells) in entries.into_iter().zip(windows) {
            // its uids were remembered while judging
            state.merge(&entry.account, entry.slot, cells, &[]);
        }
        state.seq = seq;
        state.newest = newest;
        state.applied(seq, count - 1, count);
        deltas
    }
}

/// The bytes `wire.segment_value` would take for this segment now, its uids counted
/// without encoding them (base64 of 8 bytes each, in the member `,"u":"..."`).
pub fn segment_size(
    state: &PartitionState,
    partition: i64,
    account: &str,
    slot: i64,
    seq: i64,
) -> usize {
    let windows = state.segment_windows(account, slot);
    let without = wire::segment_value(
        partition,
        account,
        slot,
        seq,
        windows.iter().map(|(start, cells)| (start, cells)),
        &mut Vec::new(),
    );
    let uids = state.hashes(account, slot).map_or(0, |h| h.len());
    without.len() + wire::uids_text(uids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dec::Dec;
    use crate::fold::{Cell, CellKey, Cells, Distinct, Parts, WindowCells};
    use crate::state::PartitionState;
    use std::sync::Arc;

    /// Cells whose JSON is as long as their stored bytes allow: the smallest stored
    /// numbers with the longest text, distinct values of control characters (6-byte
    /// escapes) and astral characters, long unicode keys, many windows in one hour.
    fn wordy(state: &mut PartitionState, account: &str, slot: i64, keys: usize, long: bool) {
        let numbers = [
            "-1E-999999",
            "-0.000001",
            "9E+999999",
            "-123456789012345678901234567890.5",
        ];
        let mut windows = WindowCells::new();
        for minute in 0..60 {
            let mut cells = Cells::new();
            for k in 0..keys {
                let key: CellKey = if long {
                    (
                        Arc::from(format!("agg\u{1}é{k}").repeat(1 + k % 3)),
                        Arc::from(if k % 2 == 0 { "" } else { "\"seg\"\u{7f}😀" }),
                    )
                } else {
                    (Arc::from(format!("{k}")), Arc::from(""))
                };
                let number = |i: usize| Dec::parse(numbers[(i + k + minute) % 4]).unwrap();
                let mut unique = Distinct::one("\u{1}");
                unique.insert("😀");
                let parts = Parts {
                    sum: Some(number(0)),
                    min: Some(number(1)),
                    max: Some(number(2)),
                    latest: Some((-9_223_372_036_854_775_807, number(3))),
                    unique: Some(unique),
                };
                cells.insert(key, Cell::new(i64::MIN + 1, parts));
            }
            windows.insert(slot * HOUR_MS + minute as i64 * 60_000 + 1, cells);
        }
        state.merge(account, slot, windows, &[1, 2, 3]);
    }

    #[test]
    fn a_segments_size_bound_is_never_below_its_document() {
        let accounts = ["a", "\u{1}\"😀", &"x".repeat(300), "b", "c"];
        for (n, account) in accounts.iter().enumerate() {
            let mut state = PartitionState::default(); // keys of its own
            let slot = 3 + n as i64 * 500_000;
            wordy(&mut state, account, slot, 1 + 2 * (n % 3), n < 3);
            let exact = segment_size(&state, 5, account, slot, i64::MIN);
            let bound = state.segment_size_bound(account, slot);
            assert!(bound >= exact, "{account:?}: bound {bound} < exact {exact}");
            assert_eq!(state.segment_size_bound("unknown", slot), 0);
        }
    }

    #[test]
    fn thousands_are_separated_like_python() {
        assert_eq!(thousands(400_000), "400,000");
        assert_eq!(thousands(983_040), "983,040");
        assert_eq!(thousands(12), "12");
        assert_eq!(thousands(1_000), "1,000");
    }
}
