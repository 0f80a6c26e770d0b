//! Folding valid measurements into cells (`streams.usage.engine.fold`) and merging cells
//! (`streams.usage.engine.state.merge_cells`).

use crate::dec::Dec;
use crate::dedup::distinct_text;
use std::borrow::Cow;
use std::sync::Arc;

pub const SUM: u8 = 0;
pub const MIN: u8 = 1;
pub const MAX: u8 = 2;
pub const LATEST: u8 = 3;
pub const COUNT: u8 = 4;
pub const UNIQUE: u8 = 5;

/// Distinct values of a UNIQUE cell, sorted (a few per cell: a vector, not a tree).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Distinct(Vec<String>);

impl Distinct {
    pub fn one(value: &str) -> Distinct {
        Distinct(vec![value.to_string()])
    }

    pub fn insert(&mut self, value: &str) {
        if let Err(at) = self.0.binary_search_by(|v| v.as_str().cmp(value)) {
            self.0.insert(at, value.to_string());
        }
    }

    pub fn extend(&mut self, other: Distinct) {
        if self.0.is_empty() {
            self.0 = other.0;
            return;
        }
        for value in other.0 {
            if let Err(at) = self.0.binary_search(&value) {
                self.0.insert(at, value);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

/// The parts of a cell (each None when its aggregation does not need it).
#[derive(Clone, Debug, Default)]
pub struct Parts {
    pub sum: Option<Dec>,
    pub min: Option<Dec>,
    pub max: Option<Dec>,
    pub latest: Option<(i64, Dec)>,
    pub unique: Option<Distinct>,
}

/// A cell's parts, compact: an aggregation needs one part (or none), so one is kept
/// inline; a cell read from elsewhere with several keeps them boxed.
#[derive(Clone, Debug, Default)]
enum Part {
    #[default]
    Nothing,
    Sum(Dec),
    Min(Dec),
    Max(Dec),
    Latest((i64, Dec)),
    Unique(Distinct),
    Several(Box<Parts>),
}

/// What one window knows for one aggregation (and segment): the count and the parts its
/// function needs.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub count: i64,
    part: Part,
}

impl Cell {
    pub fn new(count: i64, parts: Parts) -> Cell {
        let set = parts.sum.is_some() as u8
            + parts.min.is_some() as u8
            + parts.max.is_some() as u8
            + parts.latest.is_some() as u8
            + parts.unique.as_ref().is_some_and(|u| !u.is_empty()) as u8;
        let part = match (set, parts) {
            (0, _) => Part::Nothing,
            (1, Parts { sum: Some(sum), .. }) => Part::Sum(sum),
            (1, Parts { min: Some(min), .. }) => Part::Min(min),
            (1, Parts { max: Some(max), .. }) => Part::Max(max),
            (
                1,
                Parts {
                    latest: Some(latest),
                    ..
                },
            ) => Part::Latest(latest),
            (
                1,
                Parts {
                    unique: Some(unique),
                    ..
                },
            ) => Part::Unique(unique),
            (_, parts) => Part::Several(Box::new(parts)),
        };
        Cell { count, part }
    }

    pub fn parts(self) -> Parts {
        match self.part {
            Part::Nothing => Parts::default(),
            Part::Sum(sum) => Parts {
                sum: Some(sum),
                ..Parts::default()
            },
            Part::Min(min) => Parts {
                min: Some(min),
                ..Parts::default()
            },
            Part::Max(max) => Parts {
                max: Some(max),
                ..Parts::default()
            },
            Part::Latest(latest) => Parts {
                latest: Some(latest),
                ..Parts::default()
            },
            Part::Unique(unique) => Parts {
                unique: Some(unique),
                ..Parts::default()
            },
            Part::Several(parts) => *parts,
        }
    }

    pub fn sum(&self) -> Option<&Dec> {
        match &self.part {
            Part::Sum(sum) => Some(sum),
            Part::Several(parts) => parts.sum.as_ref(),
            _ => None,
        }
    }

    pub fn min(&self) -> Option<&Dec> {
        match &self.part {
            Part::Min(min) => Some(min),
            Part::Several(parts) => parts.min.as_ref(),
            _ => None,
        }
    }

    pub fn max(&self) -> Option<&Dec> {
        match &self.part {
            Part::Max(max) => Some(max),
            Part::Several(parts) => parts.max.as_ref(),
            _ => None,
        }
    }

    pub fn latest(&self) -> Option<&(i64, Dec)> {
        match &self.part {
            Part::Latest(latest) => Some(latest),
            Part::Several(parts) => parts.latest.as_ref(),
            _ => None,
        }
    }

    pub fn unique(&self) -> Option<&Distinct> {
        match &self.part {
            Part::Unique(unique) => Some(unique),
            Part::Several(parts) => parts.unique.as_ref(),
            _ => None,
        }
    }
}

pub type CellKey = (Arc<str>, Arc<str>);

/// The cells of one window, sorted by key: a few per window, so a sorted vector is both
/// smaller and faster than a map.
#[derive(Clone, Debug, Default)]
pub struct Cells(Vec<(CellKey, Cell)>);

impl Cells {
    pub fn new() -> Cells {
        Cells(Vec::new())
    }

    pub fn with_capacity(capacity: usize) -> Cells {
        Cells(Vec::with_capacity(capacity))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get_mut(&mut self, key: &CellKey) -> Option<&mut Cell> {
        match self.0.binary_search_by(|(k, _)| k.cmp(key)) {
            Ok(at) => Some(&mut self.0[at].1),
            Err(_) => None,
        }
    }

    pub fn insert(&mut self, key: CellKey, cell: Cell) {
        match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(at) => self.0[at].1 = cell,
            Err(at) => self.0.insert(at, (key, cell)),
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, (CellKey, Cell)> {
        self.0.iter()
    }
}

impl IntoIterator for Cells {
    type Item = (CellKey, Cell);
    type IntoIter = std::vec::IntoIter<(CellKey, Cell)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Cells {
    type Item = &'a (CellKey, Cell);
    type IntoIter = std::slice::Iter<'a, (CellKey, Cell)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
/// The cells of an account-hour's windows by start, sorted: an hour has one window or a
/// few (a vector, not a tree whose first node alone takes hundreds of bytes).
#[derive(Clone, Debug, Default)]
pub struct WindowCells(Vec<(i64, Cells)>);

/// A window of `WindowCells::entry`, found or not.
pub struct WindowEntry<'a> {
    windows: &'a mut Vec<(i64, Cells)>,
    start: i64,
    at: Result<usize, usize>,
}

impl<'a> WindowEntry<'a> {
    pub fn or_insert_with(self, make: impl FnOnce() -> Cells) -> &'a mut Cells {
        let at = match self.at {
            Ok(at) => at,
            Err(at) => {
                // most pieces cover one window: no room for four
                self.windows.reserve_exact(1);
                self.windows.insert(at, (self.start, make()));
                at
            }
        };
        &mut self.windows[at].1
    }
}

impl WindowCells {
    pub fn new() -> WindowCells {
        WindowCells(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find(&self, start: i64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&start, |(known, _)| *known)
    }

    pub fn entry(&mut self, start: i64) -> WindowEntry<'_> {
        let at = self.find(start);
        WindowEntry {
            windows: &mut self.0,
            start,
            at,
        }
    }

    /// Set the cells of the window starting at `start`.
    pub fn insert(&mut self, start: i64, cells: Cells) {
        match self.find(start) {
            Ok(at) => self.0[at].1 = cells,
            Err(at) => self.0.insert(at, (start, cells)),
        }
    }

    pub fn remove(&mut self, start: &i64) {
        if let Ok(at) = self.find(*start) {
            self.0.remove(at);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&i64, &Cells)> + Clone {
        self.0.iter().map(|(start, cells)| (start, cells))
    }
}

impl IntoIterator for WindowCells {
    type Item = (i64, Cells);
    type IntoIter = std::vec::IntoIter<(i64, Cells)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Which measurements an aggregation with filters or segments folds, and into which
/// segment (`streams.usage.engine.fold.Route`).
#[derive(Clone, Debug)]
pub struct Route {
    /// (field, keep, values): keep a measurement whose value is among `values` (keep
    /// true) or not among them (keep false; a missing field is not among them)
    pub filters: Vec<(String, bool, Vec<String>)>,
    /// (segment id, (field, value or None for the wildcard)) in the catalog's order
    pub segments: Vec<(Arc<str>, Vec<(String, Option<String>)>)>,
    pub default: Arc<str>,
}

fn string_of<'s>(strings: &'s [(Cow<str>, Cow<str>)], field: &str) -> Option<&'s str> {
    strings
        .iter()
        .find(|(code, _)| code == field)
        .map(|(_, text)| text.as_ref())
}

impl Route {
    /// The segment a measurement with these string fields goes to, None if a filter
    /// leaves it out.
    pub fn segment(&self, strings: &[(Cow<str>, Cow<str>)]) -> Option<&Arc<str>> {
        for (field, keep, values) in &self.filters {
            let found =
                string_of(strings, field).is_some_and(|text| values.iter().any(|v| v == text));
            if found != *keep {
                return None;
            }
        }
        for (segment, conditions) in &self.segments {
            let matches = conditions.iter().all(|(field, wanted)| {
                match (string_of(strings, field), wanted) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(text), Some(wanted)) => text == wanted,
                }
            });
            if matches {
                return Some(segment);
            }
        }
        Some(&self.default)
    }
}

#[derive(Clone, Debug)]
pub struct Target {
    pub field: String,
    pub numeric: bool,
    pub distinct: bool,
    /// (cell key, kind, route): with a route, the key's segment is the route's answer
    pub cells: Vec<(CellKey, u8, Option<Arc<Route>>)>,
}

/// The key of a cell a measurement feeds: `key` itself, or with the segment its route
/// gives (None: the route's filters leave the measurement out).
fn routed(key: &CellKey, route: &Option<Arc<Route>>, values: &Values) -> Option<CellKey> {
    match route {
        None => Some(key.clone()),
        Some(route) => route
            .segment(values.strings)
            .map(|segment| (key.0.clone(), segment.clone())),
    }
}

/// meter code -> its targets (`compile_plan`, computed by Python and handed in).
pub type Plan = crate::dedup::FastMap<String, Vec<Target>>;

/// A measurement's values, as validation leaves them.
pub struct Values<'a> {
    pub numbers: &'a [(Cow<'a, str>, Dec)],
    pub strings: &'a [(Cow<'a, str>, Cow<'a, str>)],
    pub ts: i64,
}

fn latest_newer(candidate: &(i64, Dec), current: &(i64, Dec)) -> bool {
    candidate.0 > current.0
        || (candidate.0 == current.0 && candidate.1.cmp_value(&current.1).is_gt())
}

fn first(kind: u8, number: &Dec, ts: i64, distinct: &str) -> Cell {
    let part = match kind {
        SUM => Part::Sum(number.clone()),
        MIN => Part::Min(number.clone()),
        MAX => Part::Max(number.clone()),
        LATEST => Part::Latest((ts, number.clone())),
        UNIQUE => Part::Unique(Distinct::one(distinct)),
        _ => Part::Nothing,
    };
    Cell { count: 1, part }
}

fn added(kind: u8, cell: &mut Cell, number: &Dec, ts: i64, distinct: &str) {
    cell.count += 1;
    match kind {
        SUM => {
            if let Part::Sum(sum) = &mut cell.part {
                *sum = sum.add_exact(number);
                return;
            }
            let sum = cell
                .sum()
                .map_or_else(|| number.clone(), |sum| sum.add_exact(number));
            cell.part = Part::Sum(sum);
        }
        MIN => {
            let lower = match cell.min() {
                Some(min) if number.cmp_value(min).is_ge() => min.clone(),
                _ => number.clone(),
            };
            cell.part = Part::Min(lower);
        }
        MAX => {
            let upper = match cell.max() {
                Some(max) if number.cmp_value(max).is_le() => max.clone(),
                _ => number.clone(),
            };
            cell.part = Part::Max(upper);
        }
        LATEST => {
            let candidate = (ts, number.clone());
            let newer = match cell.latest() {
                Some(latest) if !latest_newer(&candidate, latest) => latest.clone(),
                _ => candidate,
            };
            cell.part = Part::Latest(newer);
        }
        UNIQUE => {
            cell.count -= 1;
            counted(cell, distinct)
        }
        _ => cell.part = Part::Nothing,
    }
}

/// A UNIQUE cell with one more measurement of value `distinct` (its key).
fn counted(cell: &mut Cell, distinct: &str) {
    cell.count += 1;
    if let Part::Unique(unique) = &mut cell.part {
        unique.insert(distinct);
        return;
    }
    let mut unique = std::mem::take(&mut cell.part);
    cell.part = match &mut unique {
        Part::Several(parts) if parts.unique.is_some() => {
            let mut kept = parts.unique.take().expect("checked");
            kept.insert(distinct);
            Part::Unique(kept)
        }
        _ => Part::Unique(Distinct::one(distinct)),
    };
}

/// Add one measurement to the cells of its window (a field it lacks is not counted).
pub fn accumulate(targets: &[Target], cells: &mut Cells, values: &Values) {
    for target in targets {
        if target.numeric {
            let Some((_, number)) = values
                .numbers
                .iter()
                .find(|(code, _)| code == &target.field)
            else {
                continue;
            };
            let distinct = if target.distinct {
                number.canonical_text()
            } else {
                String::new()
            };
            for (key, kind, route) in &target.cells {
                let Some(key) = routed(key, route, values) else {
                    continue;
                };
                match cells.get_mut(&key) {
                    None => {
                        cells.insert(key, first(*kind, number, values.ts, &distinct));
                    }
                    Some(cell) => added(*kind, cell, number, values.ts, &distinct),
                }
            }
        } else {
            let Some((_, text)) = values
                .strings
                .iter()
                .find(|(code, _)| code == &target.field)
            else {
                continue;
            };
            let distinct = if target.distinct {
                distinct_text(text)
            } else {
                String::new()
            };
            for (key, kind, route) in &target.cells {
                let Some(key) = routed(key, route, values) else {
                    continue;
                };
                match cells.get_mut(&key) {
                    None => {
                        let part = if *kind == UNIQUE {
                            Part::Unique(Distinct::one(&distinct))
                        } else {
                            Part::Nothing
                        };
                        cells.insert(key, Cell { count: 1, part });
                    }
                    Some(cell) if *kind == UNIQUE => counted(cell, &distinct),
                    Some(cell) => {
                        *cell = Cell {
                            count: cell.count + 1,
                            part: Part::Nothing,
                        }
                    }
                }
            }
        }
    }
}

/// The cell of both measurement sets (disjoint by uid), merged into `a`.
pub fn merge_cells(a: &mut Cell, b: Cell) {
    let count = a.count + b.count;
    match (&mut a.part, b.part) {
        (Part::Sum(sum), Part::Sum(other)) => *sum = sum.add_exact(&other),
        (Part::Nothing, Part::Nothing) => {}
        (_, b_part) => {
            let mut merged = std::mem::take(a).parts();
            let b = Cell {
                count: 0,
                part: b_part,
            }
            .parts();
            merge_parts(&mut merged, b);
            *a = Cell::new(count, merged);
        }
    }
    a.count = count;
}

fn merge_parts(a: &mut Parts, b: Parts) {
    if let Some(b_unique) = b.unique {
        if !b_unique.is_empty() {
            match a.unique.as_mut() {
                None => a.unique = Some(b_unique),
                Some(unique) => unique.extend(b_unique),
            }
        }
    }
    if let Some(b_sum) = b.sum {
        a.sum = Some(match &a.sum {
            None => b_sum,
            Some(sum) => sum.add_exact(&b_sum),
        });
    }
    if let Some(b_min) = b.min {
        if a.min
            .as_ref()
            .is_none_or(|min| b_min.cmp_value(min).is_lt())
        {
            a.min = Some(b_min);
        }
    }
    if let Some(b_max) = b.max {
        if a.max
            .as_ref()
            .is_none_or(|max| b_max.cmp_value(max).is_gt())
        {
            a.max = Some(b_max);
        }
    }
    if let Some(b_latest) = b.latest {
        if a.latest
            .as_ref()
            .is_none_or(|latest| latest_newer(&b_latest, latest))
        {
            a.latest = Some(b_latest);
        }
    }
}

pub fn merge_cell_maps(target: &mut Cells, cells: Cells) {
    for (key, cell) in cells {
        match target.get_mut(&key) {
            None => {
                target.insert(key, cell);
            }
            Some(existing) => merge_cells(existing, cell),
        }
    }
}

// --- the compact layout of a window's cells in the state ------------------------------
//
// A window's cells are kept as one byte string: per cell (in key order) the id of its key
// (`(aggregation, segment)`, interned by the partition), its count, a tag for its part and
// the part. Integers are LEB128 varints (signed ones zigzag); a decimal is its inline
// coefficient and exponent, or a big one's exponent and signed little-endian coefficient
// bytes, so every value reads back exactly. A batch merges into a window by decoding it,
// merging, and encoding it again.

const NOTHING_TAG: u8 = 0;
const SUM_TAG: u8 = 1;
const MIN_TAG: u8 = 2;
const MAX_TAG: u8 = 3;
const LATEST_TAG: u8 = 4;
const UNIQUE_TAG: u8 = 5;
const SEVERAL_TAG: u8 = 6;

fn put_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_signed(out: &mut Vec<u8>, value: i64) {
    put_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_dec(out: &mut Vec<u8>, value: &Dec) {
    match value {
        Dec::Small(coeff, exp) => {
            out.push(0);
            put_signed(out, *coeff);
            put_signed(out, *exp as i64);
        }
        Dec::Big(big) => {
            out.push(1);
            put_signed(out, big.1);
            let bytes = big.0.to_signed_bytes_le();
            put_unsigned(out, bytes.len() as u64);
            out.extend_from_slice(&bytes);
        }
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put_unsigned(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn put_distinct(out: &mut Vec<u8>, unique: &Distinct) {
    put_unsigned(out, unique.0.len() as u64);
    for value in &unique.0 {
        put_text(out, value);
    }
}

fn put_part(out: &mut Vec<u8>, part: &Part) {
    match part {
        Part::Nothing => out.push(NOTHING_TAG),
        Part::Sum(sum) => {
            out.push(SUM_TAG);
            put_dec(out, sum);
        }
        Part::Min(min) => {
            out.push(MIN_TAG);
            put_dec(out, min);
        }
        Part::Max(max) => {
            out.push(MAX_TAG);
            put_dec(out, max);
        }
        Part::Latest((ts, value)) => {
            out.push(LATEST_TAG);
            put_signed(out, *ts);
            put_dec(out, value);
        }
        Part::Unique(unique) => {
            out.push(UNIQUE_TAG);
            put_distinct(out, unique);
        }
        Part::Several(parts) => {
            out.push(SEVERAL_TAG);
            let flags = parts.sum.is_some() as u8
                | (parts.min.is_some() as u8) << 1
                | (parts.max.is_some() as u8) << 2
                | (parts.latest.is_some() as u8) << 3
                | (parts.unique.is_some() as u8) << 4;
            out.push(flags);
            for value in [&parts.sum, &parts.min, &parts.max].into_iter().flatten() {
                put_dec(out, value);
            }
            if let Some((ts, value)) = &parts.latest {
                put_signed(out, *ts);
                put_dec(out, value);
            }
            if let Some(unique) = &parts.unique {
                put_distinct(out, unique);
            }
        }
    }
}

/// The bytes of a window's cells; `id_of` interns a cell key.
pub fn encode_cells(cells: &Cells, mut id_of: impl FnMut(&CellKey) -> u32) -> Box<[u8]> {
    let mut out = Vec::with_capacity(12 * cells.0.len());
    for (key, cell) in &cells.0 {
        put_unsigned(&mut out, id_of(key) as u64);
        put_signed(&mut out, cell.count);
        put_part(&mut out, &cell.part);
    }
    out.into_boxed_slice()
}

/// Reads what `encode_cells` wrote (only the state writes it: a short read is a bug).
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        let byte = self.bytes[self.at];
        self.at += 1;
        byte
    }

    fn unsigned(&mut self) -> u64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.byte();
            value |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                return value;
            }
            shift += 7;
        }
    }

    fn signed(&mut self) -> i64 {
        let raw = self.unsigned();
        ((raw >> 1) as i64) ^ -((raw & 1) as i64)
    }

    fn take(&mut self, length: usize) -> &'a [u8] {
        let bytes = &self.bytes[self.at..self.at + length];
        self.at += length;
        bytes
    }

    fn dec(&mut self) -> Dec {
        if self.byte() == 0 {
            let coeff = self.signed();
            Dec::Small(coeff, self.signed() as i32)
        } else {
            let exp = self.signed();
            let length = self.unsigned() as usize;
            let coeff = num_bigint::BigInt::from_signed_bytes_le(self.take(length));
            Dec::Big(Box::new((coeff, exp)))
        }
    }

    fn distinct(&mut self) -> Distinct {
        let count = self.unsigned() as usize;
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            let length = self.unsigned() as usize;
            let text = std::str::from_utf8(self.take(length)).expect("text the state wrote");
            values.push(text.to_string());
        }
        Distinct(values)
    }

    fn part(&mut self) -> Part {
        match self.byte() {
            SUM_TAG => Part::Sum(self.dec()),
            MIN_TAG => Part::Min(self.dec()),
            MAX_TAG => Part::Max(self.dec()),
            LATEST_TAG => {
                let ts = self.signed();
                Part::Latest((ts, self.dec()))
            }
            UNIQUE_TAG => Part::Unique(self.distinct()),
            SEVERAL_TAG => {
                let flags = self.byte();
                let mut parts = Parts::default();
                if flags & 1 != 0 {
                    parts.sum = Some(self.dec());
                }
                if flags & 2 != 0 {
                    parts.min = Some(self.dec());
                }
                if flags & 4 != 0 {
                    parts.max = Some(self.dec());
                }
                if flags & 8 != 0 {
                    let ts = self.signed();
                    parts.latest = Some((ts, self.dec()));
                }
                if flags & 16 != 0 {
                    parts.unique = Some(self.distinct());
                }
                Part::Several(Box::new(parts))
            }
            _ => Part::Nothing,
        }
    }
}

/// The cells `encode_cells` wrote; `keys` holds the interned cell keys by id.
pub fn decode_cells(bytes: &[u8], keys: &[CellKey]) -> Cells {
    let mut reader = Reader { bytes, at: 0 };
    let mut cells = Vec::with_capacity(4);
    while reader.at < bytes.len() {
        let key = keys[reader.unsigned() as usize].clone();
        let count = reader.signed();
        let part = reader.part();
        cells.push((key, Cell { count, part }));
    }
    Cells(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: &str, segment: &str) -> CellKey {
        (Arc::from(code), Arc::from(segment))
    }

    fn document(cells: &Cells) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, cell) in cells {
            out.extend_from_slice(format!("{}/{}=", key.0, key.1).as_bytes());
            crate::wire::cell_json(cell, &mut out);
            out.push(b';');
        }
        out
    }

    #[test]
    fn a_window_reads_back_exactly_with_big_decimals_and_unicode_distinct_values() {
        let big = Dec::parse("123456789012345678901234567890.000000000000000000001").unwrap();
        assert!(matches!(big, Dec::Big(_)));
        let tiny = Dec::parse("-1E-999999").unwrap();
        let mut cells = Cells::new();
        cells.insert(
            key("calls", ""),
            Cell::new(
                3,
                Parts {
                    sum: Some(big.clone()),
                    ..Parts::default()
                },
            ),
        );
        cells.insert(
            key("low", "région=é"),
            Cell::new(
                1,
                Parts {
                    min: Some(tiny),
                    ..Parts::default()
                },
            ),
        );
        cells.insert(
            key("high", "x"),
            Cell::new(
                70,
                Parts {
                    max: Some(Dec::from_i64(i64::MIN)),
                    ..Parts::default()
                },
            ),
        );
        cells.insert(
            key("last", ""),
            Cell::new(
                2,
                Parts {
                    latest: Some((-5, Dec::parse("0.5").unwrap())),
                    ..Parts::default()
                },
            ),
        );
        let mut users = Distinct::one("ünï😀");
        users.insert("\u{0}digest");
        users.insert("");
        cells.insert(
            key("users", "日本"),
            Cell::new(
                300,
                Parts {
                    unique: Some(users.clone()),
                    ..Parts::default()
                },
            ),
        );
        cells.insert(
            key("several", ""),
            Cell::new(
                i64::MAX,
                Parts {
                    sum: Some(Dec::from_i64(i64::MAX)),
                    max: Some(big),
                    latest: Some((i64::MAX, Dec::zero())),
                    unique: Some(users),
                    ..Parts::default()
                },
            ),
        );
        cells.insert(key("count", ""), Cell::new(9, Parts::default()));
        let mut keys: Vec<CellKey> = Vec::new();
        let bytes = encode_cells(&cells, |k| match keys.iter().position(|known| known == k) {
            Some(at) => at as u32,
            None => {
                keys.push(k.clone());
                (keys.len() - 1) as u32
            }
        });
        let back = decode_cells(&bytes, &keys);
        assert_eq!(document(&back), document(&cells));
        assert_eq!(back.iter().count(), 7);
        assert!(decode_cells(&encode_cells(&Cells::new(), |_| 0), &keys).is_empty());
    }
}
