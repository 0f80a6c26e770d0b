//! Folding valid measurements into cells (`streams.usage.engine.fold`) and merging cells
//! (`streams.usage.engine.state.merge_cells`).

use crate::dec::Dec;
use crate::dedup::distinct_text;
use std::collections::BTreeMap;
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

/// What one window knows for one aggregation (and segment); only the parts its function
/// needs are set.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub count: i64,
    pub sum: Option<Dec>,
    pub min: Option<Dec>,
    pub max: Option<Dec>,
    pub latest: Option<(i64, Dec)>,
    pub unique: Option<Distinct>,
}

/// (aggregation code, segment): shared strings, so a cell costs no copy of its key.
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
pub type WindowCells = BTreeMap<i64, Cells>;

#[derive(Clone, Debug)]
pub struct Target {
    pub field: String,
    pub numeric: bool,
    pub distinct: bool,
    pub cells: Vec<(CellKey, u8)>,
}

/// meter code -> its targets (`compile_plan`, computed by Python and handed in).
pub type Plan = crate::dedup::FastMap<String, Vec<Target>>;

/// A measurement's values, as validation leaves them.
pub struct Values<'a> {
    pub numbers: &'a [(std::borrow::Cow<'a, str>, Dec)],
    pub strings: &'a [(&'a str, &'a str)],
    pub ts: i64,
}

fn latest_newer(candidate: &(i64, Dec), current: &(i64, Dec)) -> bool {
    candidate.0 > current.0 || (candidate.0 == current.0 && candidate.1.cmp_value(&current.1).is_gt())
}

fn first(kind: u8, number: &Dec, ts: i64, distinct: &str) -> Cell {
    let mut cell = Cell { count: 1, ..Cell::default() };
    match kind {
        SUM => cell.sum = Some(number.clone()),
        MIN => cell.min = Some(number.clone()),
        MAX => cell.max = Some(number.clone()),
        LATEST => cell.latest = Some((ts, number.clone())),
        UNIQUE => cell.unique = Some(Distinct::one(distinct)),
        _ => {}
    }
    cell
}

fn added(kind: u8, cell: &mut Cell, number: &Dec, ts: i64, distinct: &str) {
    match kind {
        SUM => {
            let sum = match &cell.sum {
                None => number.clone(),
                Some(sum) => sum.add_exact(number),
            };
            *cell = Cell { count: cell.count + 1, sum: Some(sum), ..Cell::default() };
        }
        MIN => {
            let lower = match &cell.min {
                Some(min) if number.cmp_value(min).is_ge() => min.clone(),
                _ => number.clone(),
            };
            *cell = Cell { count: cell.count + 1, min: Some(lower), ..Cell::default() };
        }
        MAX => {
            let upper = match &cell.max {
                Some(max) if number.cmp_value(max).is_le() => max.clone(),
                _ => number.clone(),
            };
            *cell = Cell { count: cell.count + 1, max: Some(upper), ..Cell::default() };
        }
        LATEST => {
            let candidate = (ts, number.clone());
            let newer = match &cell.latest {
                Some(latest) if !latest_newer(&candidate, latest) => latest.clone(),
                _ => candidate,
            };
            *cell = Cell { count: cell.count + 1, latest: Some(newer), ..Cell::default() };
        }
        UNIQUE => counted(cell, distinct),
        _ => *cell = Cell { count: cell.count + 1, ..Cell::default() },
    }
}

fn counted(cell: &mut Cell, distinct: &str) {
    match cell.unique.as_mut() {
        None => {
            *cell = Cell {
                count: cell.count + 1,
                unique: Some(Distinct::one(distinct)),
                ..Cell::default()
            }
        }
        Some(unique) => {
            unique.insert(distinct);
            cell.count += 1;
            cell.sum = None;
            cell.min = None;
            cell.max = None;
            cell.latest = None;
        }
    }
}

/// Add one measurement to the cells of its window (a field it lacks is not counted).
pub fn accumulate(targets: &[Target], cells: &mut Cells, values: &Values) {
    for target in targets {
        if target.numeric {
            let Some((_, number)) = values.numbers.iter().find(|(code, _)| *code == target.field)
            else {
                continue;
            };
            let distinct = if target.distinct { number.canonical_text() } else { String::new() };
            for (key, kind) in &target.cells {
                match cells.get_mut(key) {
                    None => {
                        cells.insert(key.clone(), first(*kind, number, values.ts, &distinct));
                    }
                    Some(cell) => added(*kind, cell, number, values.ts, &distinct),
                }
            }
        } else {
            let Some((_, text)) = values.strings.iter().find(|(code, _)| *code == target.field)
            else {
                continue;
            };
            let distinct = if target.distinct { distinct_text(text) } else { String::new() };
            for (key, kind) in &target.cells {
                match cells.get_mut(key) {
                    None => {
                        let mut cell = Cell { count: 1, ..Cell::default() };
                        if *kind == UNIQUE {
                            cell.unique = Some(Distinct::one(&distinct));
                        }
                        cells.insert(key.clone(), cell);
                    }
                    Some(cell) if *kind == UNIQUE => counted(cell, &distinct),
                    Some(cell) => *cell = Cell { count: cell.count + 1, ..Cell::default() },
                }
            }
        }
    }
}

/// The cell of both measurement sets (disjoint by uid), merged into `a`.
pub fn merge_cells(a: &mut Cell, b: Cell) {
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
        if a.min.as_ref().map_or(true, |min| b_min.cmp_value(min).is_lt()) {
            a.min = Some(b_min);
        }
    }
    if let Some(b_max) = b.max {
        if a.max.as_ref().map_or(true, |max| b_max.cmp_value(max).is_gt()) {
            a.max = Some(b_max);
        }
    }
    if let Some(b_latest) = b.latest {
        if a.latest.as_ref().map_or(true, |latest| latest_newer(&b_latest, latest)) {
            a.latest = Some(b_latest);
        }
    }
    a.count += b.count;
}

/// Merge windows of cells into `into`, taking the cells over.
pub fn merge_windows(into: &mut WindowCells, windows: WindowCells) {
    for (start, cells) in windows {
        match into.get_mut(&start) {
            None => {
                into.insert(start, cells);
            }
            Some(target) => merge_cell_maps(target, cells),
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
