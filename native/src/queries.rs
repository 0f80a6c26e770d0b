//! Reads: merged cells per (aggregation, bucket) of the windows starting in a range, and
//! the accounts with usage in a range. Only the windows in the range are touched.

use crate::engine::Engine;
use crate::fold::{merge_cells, Cell};
use std::collections::{BTreeMap, BTreeSet, HashSet};

impl Engine {
    pub fn query(
        &self,
        account: &str,
        codes: &[String],
        start: i64,
        end: i64,
        bucket_ms: Option<i64>,
        by_segment: bool,
    ) -> Vec<(String, String, i64, Cell)> {
        let Some(state) = self.states.get(&self.partition_of(account)) else {
            return Vec::new();
        };
        if start >= end {
            return Vec::new();
        }
        let wanted: HashSet<&str> = codes.iter().map(String::as_str).collect();
        // (aggregation, segment or "" for all of them, bucket)
        let mut merged: BTreeMap<(String, String, i64), Cell> = BTreeMap::new();
        for (window, cells) in state.windows_in(account, start..end) {
            let bucket = bucket_ms.map_or(0, |size| window - window.rem_euclid(size));
            for ((code, segment), cell) in cells {
                if !wanted.contains(&*code) {
                    continue;
                }
                let segment = if by_segment {
                    segment.to_string()
                } else {
                    String::new()
                };
                let key = (code.to_string(), segment, bucket);
                match merged.get_mut(&key) {
                    None => {
                        merged.insert(key, cell);
                    }
                    Some(total) => merge_cells(total, cell),
                }
            }
        }
        merged
            .into_iter()
            .map(|((code, segment, bucket), cell)| (code, segment, bucket, cell))
            .collect()
    }

    pub fn accounts(&self, partitions: &[i64], start: i64, end: i64) -> Vec<String> {
        let mut found = BTreeSet::new();
        if start < end {
            for partition in partitions {
                if let Some(state) = self.states.get(partition) {
                    found.extend(state.accounts_in(start..end).map(str::to_string));
                }
            }
        }
        found.into_iter().collect()
    }

    /// Account-hours with usage (for benchmarks).
    pub fn account_hours(&self) -> usize {
        self.states
            .values()
            .map(|state| state.account_hours())
            .sum()
    }
}
