//! The wire formats of `streams.usage.engine.wire`, byte for byte: JSON as
//! `orjson.dumps(document, option=OPT_SORT_KEYS)` writes it (compact, keys sorted by
//! UTF-8 bytes, orjson's escapes), numbers as canonical decimal strings, uid hashes as
//! base64 of sorted big-endian uint64s.

use crate::dec::Dec;
use crate::decode::{parse, Json};
use crate::fold::{Cell, Cells, Distinct, Parts, WindowCells};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::io::Write as _;
use std::sync::Arc;

pub const VERSION: i64 = 1;
pub const ENVELOPE_BYTES: usize = 256;
pub const MARKER_PREFIX: &[u8] = b"|partition|";
pub const DELTA_PREFIX: &[u8] = b"|delta|";
const SEPARATOR: char = '|';

// --- writing --------------------------------------------------------------------------

/// A JSON string as orjson writes it.
pub fn json_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match byte {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            8 => Some(b"\\b"),
            12 => Some(b"\\f"),
            _ => None,
        };
        if escape.is_none() && byte >= 0x20 {
            continue;
        }
        out.extend_from_slice(&bytes[start..at]);
        match escape {
            Some(text) => out.extend_from_slice(text),
            None => {
                let _ = write!(out, "\\u{:04x}", byte);
            }
        }
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The length of `json_string(text)`, without writing it.
pub fn json_len(text: &str) -> usize {
    2 + text
        .bytes()
        .map(|byte| match byte {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 8 | 12 => 2,
            byte if byte < 0x20 => 6,
            _ => 1,
        })
        .sum::<usize>()
}

fn number_member(name: &str, number: &Dec, out: &mut Vec<u8>) {
    // a canonical number's text never needs escaping
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
    number.write_canonical(out);
    out.push(b'"');
}

/// `cell_document` with its keys sorted: hi, l, lo, lt, n, s, u.
pub fn cell_json(cell: &Cell, out: &mut Vec<u8>) {
    out.push(b'{');
    if let Some(max) = cell.max() {
        number_member("\"hi\":", max, out);
        out.push(b',');
    }
    if let Some((_, value)) = cell.latest() {
        number_member("\"l\":", value, out);
        out.push(b',');
    }
    if let Some(min) = cell.min() {
        number_member("\"lo\":", min, out);
        out.push(b',');
    }
    if let Some((ts, _)) = cell.latest() {
        let _ = write!(out, "\"lt\":{},", ts);
    }
    let _ = write!(out, "\"n\":{}", cell.count);
    if let Some(sum) = cell.sum() {
        out.push(b',');
        number_member("\"s\":", sum, out);
    }
    if let Some(unique) = cell.unique() {
        if !unique.is_empty() {
            out.extend_from_slice(b",\"u\":[");
            for (i, value) in unique.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_string(value, out);
            }
            out.push(b']');
        }
    }
    out.push(b'}');
}

fn cells_json(cells: &Cells, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut code: Option<&str> = None;
    for ((aggregation, segment), cell) in cells {
        if code != Some(&**aggregation) {
            if code.is_some() {
                out.extend_from_slice(b"},");
            }
            json_string(aggregation, out);
            out.extend_from_slice(b":{");
            code = Some(aggregation);
        } else {
            out.push(b',');
        }
        json_string(segment, out);
        out.push(b':');
        cell_json(cell, out);
    }
    if code.is_some() {
        out.push(b'}');
    }
    out.push(b'}');
}

fn windows_json<'a>(windows: impl Iterator<Item = (&'a i64, &'a Cells)>, out: &mut Vec<u8>) {
    let mut sorted: Vec<(&i64, &Cells)> = windows.collect();
    // JSON keys sort as text: the same as numbers when all have as many digits
    let digits = |n: i64| {
        if n < 0 {
            0
        } else {
            n.checked_ilog10().unwrap_or(0) + 1
        }
    };
    let same = sorted.first().is_none_or(|(first, _)| {
        let width = digits(**first);
        width > 0 && sorted.iter().all(|(start, _)| digits(**start) == width)
    });
    if !same {
        sorted.sort_by_key(|(start, _)| start.to_string());
    }
    out.push(b'{');
    for (i, (start, cells)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "\"{}\":", start);
        cells_json(cells, out);
    }
    out.push(b'}');
}

/// What an account-hour's `uids` hashes add to its segment document: `,"u":"…"`, the
/// hashes in base64 (`pack_uids`).
pub fn uids_text(uids: usize) -> usize {
    if uids == 0 {
        return 0;
    }
    ",\"u\":\"\"".len() + 4 * (uids * 8).div_ceil(3)
}

pub fn pack_uids(hashes: &mut [u64]) -> String {
    hashes.sort_unstable();
    let mut raw = Vec::with_capacity(hashes.len() * 8);
    for hash in hashes.iter() {
        raw.extend_from_slice(&hash.to_be_bytes());
    }
    STANDARD.encode(raw)
}

/// The members "u" and "w" of a piece (or segment), without braces; empty when neither.
fn piece_members<'a>(
    windows: impl Iterator<Item = (&'a i64, &'a Cells)> + Clone,
    hashes: &mut Vec<u64>,
    out: &mut Vec<u8>,
) -> bool {
    let packed = pack_uids(hashes);
    let mut any = false;
    if !packed.is_empty() {
        out.extend_from_slice(b"\"u\":");
        json_string(&packed, out);
        any = true;
    }
    if windows.clone().next().is_some() {
        if any {
            out.push(b',');
        }
        out.extend_from_slice(b"\"w\":");
        windows_json(windows, out);
        any = true;
    }
    any
}

pub fn encode_piece(windows: &WindowCells, hashes: &mut Vec<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + 12 * hashes.len());
    out.push(b'{');
    piece_members(windows.iter(), hashes, &mut out);
    out.push(b'}');
    out
}

pub fn delta_key(partition: i64, seq: i64, chunk: i64) -> Vec<u8> {
    let mut key = DELTA_PREFIX.to_vec();
    key.extend_from_slice(format!("{}|{}|{}", partition, seq, chunk).as_bytes());
    key
}

pub fn is_delta_key(key: &[u8]) -> bool {
    key.starts_with(DELTA_PREFIX)
}

pub fn delta_partition(key: &[u8]) -> Option<i64> {
    let rest = &key[DELTA_PREFIX.len()..];
    let end = rest.iter().position(|&b| b == b'|').unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

pub struct Entry {
    pub account: String,
    pub slot: i64,
    pub piece: Vec<u8>,
}

pub fn entry_bytes(account_key_len: usize, slot: i64, piece_len: usize) -> usize {
    account_key_len + 4 + slot.to_string().len() + 4 + piece_len
}

/// `wire.pack`: entries (grouped by account) into messages of at most `budget` bytes;
/// returns the index ranges of each chunk's entries.
pub fn pack(entries: &[Entry], budget: usize) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = vec![vec![]];
    let mut size = ENVELOPE_BYTES;
    let mut index = 0;
    while index < entries.len() {
        let account = &entries[index].account;
        let mut end = index;
        while end < entries.len() && entries[end].account == *account {
            end += 1;
        }
        let key = json_len(account);
        let whole = key
            + 4
            + entries[index..end]
                .iter()
                .map(|e| e.slot.to_string().len() + 4 + e.piece.len())
                .sum::<usize>();
        if size + whole > budget
            && !chunks.last().expect("a chunk").is_empty()
            && ENVELOPE_BYTES + whole <= budget
        {
            chunks.push(vec![]);
            size = ENVELOPE_BYTES;
        }
        if size + whole <= budget {
            chunks.last_mut().expect("a chunk").extend(index..end);
            size += whole;
        } else {
            let mut holds_account = false;
            for at in index..end {
                let entry = &entries[at];
                let body = entry.slot.to_string().len() + 4 + entry.piece.len();
                let mut need = body + if holds_account { 0 } else { key + 4 };
                if size + need > budget && !chunks.last().expect("a chunk").is_empty() {
                    chunks.push(vec![]);
                    size = ENVELOPE_BYTES;
                    need = body + key + 4;
                }
                chunks.last_mut().expect("a chunk").push(at);
                size += need;
                holds_account = true;
            }
        }
        index = end;
    }
    let kept: Vec<Vec<usize>> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
    if kept.is_empty() {
        vec![vec![]]
    } else {
        kept
    }
}

pub struct DeltaHeader {
    pub partition: i64,
    pub seq: i64,
    pub chunk: i64,
    pub chunks: i64,
    pub newest: i64,
    pub expire: Option<(i64, i64)>,
}

/// `wire.delta_value`: one delta message from encoded pieces (in account order).
pub fn delta_value(header: &DeltaHeader, entries: &[&Entry]) -> Vec<u8> {
    let size: usize = entries
        .iter()
        .map(|e| e.account.len() + e.piece.len() + 32)
        .sum();
    let mut out = Vec::with_capacity(ENVELOPE_BYTES + size);
    out.extend_from_slice(b"{\"accounts\":{");
    let mut index = 0;
    let mut first = true;
    while index < entries.len() {
        let account = &entries[index].account;
        let mut group: Vec<&Entry> = Vec::new();
        while index < entries.len() && entries[index].account == *account {
            group.push(entries[index]);
            index += 1;
        }
        if group.len() > 1 {
            group.sort_by_key(|entry| entry.slot.to_string()); // JSON keys sort as text
        }
        if !first {
            out.push(b',');
        }
        first = false;
        json_string(account, &mut out);
        out.extend_from_slice(b":{");
        for (i, entry) in group.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = write!(out, "\"{}\":", entry.slot);
            out.extend_from_slice(&entry.piece);
        }
        out.push(b'}');
    }
    let _ = write!(
        out,
        "}},\"chunk\":{},\"chunks\":{},",
        header.chunk, header.chunks
    );
    if let Some((uids_before, windows_before)) = header.expire {
        let _ = write!(
            out,
            "\"expire\":{{\"uids_before\":{},\"windows_before\":{}}},",
            uids_before, windows_before
        );
    }
    let _ = write!(
        out,
        "\"kind\":\"delta\",\"newest\":{},\"partition\":{},\"seq\":{},\"v\":{}}}",
        header.newest, header.partition, header.seq, VERSION
    );
    out
}

fn escape_account(account: &str) -> String {
    account.replace('%', "%25").replace(SEPARATOR, "%7C")
}

pub fn segment_key(account: &str, slot: i64) -> Vec<u8> {
    format!("{}{}{}", escape_account(account), SEPARATOR, slot).into_bytes()
}

pub fn marker_key(partition: i64) -> Vec<u8> {
    let mut key = MARKER_PREFIX.to_vec();
    key.extend_from_slice(partition.to_string().as_bytes());
    key
}

pub fn segment_value<'a>(
    partition: i64,
    account: &str,
    slot: i64,
    seq: i64,
    windows: impl Iterator<Item = (&'a i64, &'a Cells)> + Clone,
    hashes: &mut Vec<u64>,
) -> Vec<u8> {
    let mut out = b"{\"account\":".to_vec();
    json_string(account, &mut out);
    let _ = write!(
        out,
        ",\"kind\":\"segment\",\"partition\":{},\"seq\":{},\"slot\":{}",
        partition, seq, slot
    );
    let packed = pack_uids(hashes);
    if !packed.is_empty() {
        out.extend_from_slice(b",\"u\":");
        json_string(&packed, &mut out);
    }
    let _ = write!(out, ",\"v\":{}", VERSION);
    if windows.clone().next().is_some() {
        out.extend_from_slice(b",\"w\":");
        windows_json(windows, &mut out);
    }
    out.push(b'}');
    out
}

pub fn marker_value(partition: i64, seq: i64, newest: i64, expired: (i64, i64)) -> Vec<u8> {
    format!(
        "{{\"expired\":{{\"uids_before\":{},\"windows_before\":{}}},\"kind\":\"marker\",\
         \"newest\":{},\"partition\":{},\"seq\":{},\"v\":{}}}",
        expired.0, expired.1, newest, partition, seq, VERSION
    )
    .into_bytes()
}

// --- reading --------------------------------------------------------------------------

pub struct Piece {
    pub windows: WindowCells,
    pub uids: Vec<u64>,
}

/// An account-hour of a delta: its slot, and its piece or why it cannot be read.
pub type Slot = (i64, Result<Piece, String>);

pub struct DeltaMessage {
    pub header: DeltaHeader,
    /// account -> its hours, in document order
    pub accounts: Vec<(String, Vec<Slot>)>,
}

fn document<'a>(value: &'a [u8], kind: &str) -> Result<Json<'a>, String> {
    let document = parse(value).map_err(|e| format!("{}: not JSON: {}", kind, e))?;
    if !matches!(document, Json::Obj(_)) {
        return Err(format!("{}: expected an object", kind));
    }
    if document.get("v").and_then(|v| v.as_int()) != Some(VERSION)
        || !matches!(document.get("v"), Some(Json::Num(_, true)))
    {
        return Err(format!("{}.v: not version 1", kind));
    }
    if document.get("kind").and_then(|k| k.as_str()) != Some(kind) {
        return Err(format!("{}.kind: expected {}", kind, kind));
    }
    Ok(document)
}

fn integer(document: &Json, name: &str, where_: &str) -> Result<i64, String> {
    document
        .get(name)
        .and_then(|v| v.as_int())
        .ok_or_else(|| format!("{}.{}: expected int", where_, name))
}

fn natural(document: &Json, name: &str, where_: &str, least: i64) -> Result<i64, String> {
    let value = integer(document, name, where_)?;
    if value < least {
        return Err(format!("{}.{}: must be >= {}", where_, name, least));
    }
    Ok(value)
}

fn thresholds(document: Option<&Json>, where_: &str) -> Result<(i64, i64), String> {
    let Some(document @ Json::Obj(_)) = document else {
        return Err(format!("{}: expected an object", where_));
    };
    Ok((
        integer(document, "uids_before", where_)?,
        integer(document, "windows_before", where_)?,
    ))
}

fn number_key(text: &str, where_: &str) -> Result<i64, String> {
    text.parse::<i64>()
        .map_err(|_| format!("{}: expected an integer key", where_))
}

pub fn decode_delta(value: &[u8]) -> Result<DeltaMessage, String> {
    let document = document(value, "delta")?;
    let Some(Json::Obj(accounts)) = document.get("accounts") else {
        return Err("delta.accounts: expected dict".into());
    };
    let mut out = Vec::with_capacity(accounts.len());
    for (account, pieces) in accounts {
        let Json::Obj(pieces) = pieces else {
            return Err(format!(
                "delta.accounts[{}]: expected an object of hours",
                account
            ));
        };
        if account.is_empty() {
            return Err("delta.accounts: empty account".into());
        }
        let mut slots = Vec::with_capacity(pieces.len());
        for (text, piece) in pieces {
            let slot = number_key(text, "delta slot")?;
            slots.push((slot, decode_piece(piece)));
        }
        out.push((account.to_string(), slots));
    }
    let expire = match document.get("expire") {
        None | Some(Json::Null) => None,
        some => Some(thresholds(some, "delta.expire")?),
    };
    Ok(DeltaMessage {
        header: DeltaHeader {
            partition: natural(&document, "partition", "delta", 0)?,
            seq: natural(&document, "seq", "delta", 1)?,
            chunk: natural(&document, "chunk", "delta", 0)?,
            chunks: natural(&document, "chunks", "delta", 1)?,
            newest: integer(&document, "newest", "delta")?,
            expire,
        },
        accounts: out,
    })
}

pub fn decode_piece(document: &Json) -> Result<Piece, String> {
    if !matches!(document, Json::Obj(_)) {
        return Err("piece: expected an object".into());
    }
    let packed = match document.get("u") {
        None => "",
        Some(Json::Str(text)) => text,
        Some(_) => return Err("piece.u: expected a base64 string".into()),
    };
    let windows = match document.get("w") {
        None => WindowCells::new(),
        Some(windows) => decode_windows(windows)?,
    };
    Ok(Piece {
        windows,
        uids: unpack_uids(packed)?,
    })
}

pub fn unpack_uids(text: &str) -> Result<Vec<u64>, String> {
    let raw = STANDARD
        .decode(text)
        .map_err(|e| format!("not base64: {}", e))?;
    if raw.len() % 8 != 0 {
        return Err("not a whole number of 8-byte hashes".into());
    }
    Ok(raw
        .chunks(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

fn decode_windows(document: &Json) -> Result<WindowCells, String> {
    let Json::Obj(windows) = document else {
        return Err("windows: expected an object".into());
    };
    let mut out = WindowCells::new();
    for (start, codes) in windows {
        let start = number_key(start, "window")?;
        let Json::Obj(codes) = codes else {
            return Err("window: expected an object of aggregations".into());
        };
        let mut cells = Cells::new();
        for (code, segments) in codes {
            let Json::Obj(segments) = segments else {
                return Err("aggregation: expected an object of segments".into());
            };
            for (segment, cell) in segments {
                let key = (Arc::from(code.as_ref()), Arc::from(segment.as_ref()));
                cells.insert(key, decode_cell(cell)?);
            }
        }
        out.insert(start, cells);
    }
    Ok(out)
}

fn decimal(document: &Json, name: &str) -> Result<Option<Dec>, String> {
    match document.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Str(text)) => Dec::parse(text)
            .map(Some)
            .ok_or_else(|| format!("cell.{}: not exact", name)),
        Some(_) => Err(format!(
            "cell.{}: expected an exact number as a string",
            name
        )),
    }
}

fn decode_cell(document: &Json) -> Result<Cell, String> {
    if !matches!(document, Json::Obj(_)) {
        return Err("cell: expected a cell object".into());
    }
    let count = match document.get("n") {
        Some(n @ Json::Num(_, true)) => n.as_int().filter(|n| *n >= 1),
        _ => None,
    }
    .ok_or("cell.n: expected a count >= 1")?;
    let latest = if document.get("l").is_some() {
        let number = decimal(document, "l")?;
        let stamp = document.get("lt").and_then(|v| v.as_int());
        match (stamp, number) {
            (Some(stamp), Some(number)) => Some((stamp, number)),
            _ => return Err("cell.lt: expected the latest ts (an integer)".into()),
        }
    } else {
        None
    };
    let unique = match document.get("u") {
        None | Some(Json::Null) => None,
        Some(Json::Arr(items)) if !items.is_empty() => {
            let mut set = Distinct::default();
            for item in items {
                set.insert(item.as_str().ok_or("cell.u: expected strings")?);
            }
            Some(set)
        }
        Some(_) => return Err("cell.u: expected a non-empty list of strings".into()),
    };
    let parts = Parts {
        sum: decimal(document, "s")?,
        min: decimal(document, "lo")?,
        max: decimal(document, "hi")?,
        latest,
        unique,
    };
    Ok(Cell::new(count, parts))
}

pub enum Snapshot {
    Segment {
        partition: i64,
        account: String,
        slot: i64,
        seq: i64,
        piece: Piece,
    },
    Marker {
        partition: i64,
        seq: i64,
        newest: i64,
        expired: (i64, i64),
    },
    Tombstone {
        account: String,
        slot: i64,
    },
    Nothing,
}

fn unquote(text: &str) -> String {
    if !text.contains('%') {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%'
            && at + 2 < bytes.len()
            && bytes[at + 1].is_ascii_hexdigit()
            && bytes[at + 2].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&bytes[at + 1..at + 3]).expect("ASCII");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            at += 3;
            continue;
        }
        out.push(bytes[at]);
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `wire.decode_snapshot`: a record of the snapshot topic.
pub fn decode_snapshot(key: &[u8], value: Option<&[u8]>) -> Result<Snapshot, String> {
    if key.starts_with(MARKER_PREFIX) {
        let Some(value) = value else {
            return Ok(Snapshot::Nothing);
        };
        let document = document(value, "marker")?;
        return Ok(Snapshot::Marker {
            partition: natural(&document, "partition", "marker", 0)?,
            seq: natural(&document, "seq", "marker", 0)?,
            newest: integer(&document, "newest", "marker")?,
            expired: thresholds(document.get("expired"), "marker.expired")?,
        });
    }
    let text = std::str::from_utf8(key).map_err(|_| "segment key: not UTF-8".to_string())?;
    let (escaped, rest) = match text.find(SEPARATOR) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let account = unquote(escaped);
    let Some(rest) = rest.filter(|_| !account.is_empty()) else {
        return Err("segment key: not '<account>|<slot>'".into());
    };
    let slot = number_key(rest, "segment key")?;
    let Some(value) = value else {
        return Ok(Snapshot::Tombstone { account, slot });
    };
    let document = document(value, "segment")?;
    if document.get("account").and_then(|a| a.as_str()) != Some(account.as_str())
        || document.get("slot").and_then(|s| s.as_int()) != Some(slot)
    {
        return Err("segment: its account and slot do not match its key".into());
    }
    let piece = decode_piece(&document)?;
    Ok(Snapshot::Segment {
        partition: natural(&document, "partition", "segment", 0)?,
        account,
        slot,
        seq: natural(&document, "seq", "segment", 0)?,
        piece,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_key(text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 2);
        json_string(text, &mut out);
        out
    }

    #[test]
    fn strings_are_escaped_like_orjson() {
        assert_eq!(
            json_key("a\"\\\n\u{1}é\u{7f}"),
            b"\"a\\\"\\\\\\n\\u0001\xc3\xa9\x7f\"".to_vec()
        );
        for text in ["", "a\"\\\n\r\t\u{8}\u{c}\u{1}\u{1f}é\u{7f}😀", "plain"] {
            assert_eq!(json_len(text), json_key(text).len(), "{text:?}");
        }
    }

    #[test]
    fn keys_are_todays() {
        assert_eq!(segment_key("a|b%", 5), b"a%7Cb%25|5".to_vec());
        assert_eq!(unquote("a%7Cb%25"), "a|b%");
        assert_eq!(delta_key(2, 7, 0), b"|delta|2|7|0".to_vec());
        assert_eq!(delta_partition(b"|delta|2|7|0"), Some(2));
    }

    #[test]
    fn an_empty_piece_packs_into_one_empty_chunk() {
        assert_eq!(pack(&[], 1000), vec![Vec::<usize>::new()]);
    }
}
