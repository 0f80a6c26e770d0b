//! The Python module `meterline_native`: one class, `Engine`, that
//! `streams.usage.engine.native.NativeEngine` wraps. Plain tuples and bytes cross the
//! boundary; a panic in a call becomes a RuntimeError, never an abort.

use crate::catalog;
use crate::engine::{Config, Engine, Message, MessageOverride, Outcome};
use crate::fold::Cell;
use crate::validate::{Override, Rules};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use pyo3::IntoPyObjectExt;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn guarded<T>(body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => Err(PyRuntimeError::new_err(crate::engine::panic_text(payload))),
    }
}

type DeltaTuple<'py> = (i64, i64, i64, i64, Bound<'py, PyBytes>, Bound<'py, PyBytes>);
type CellTuple = (
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Vec<String>,
);

fn delta_tuples<'py>(
    py: Python<'py>,
    deltas: Vec<crate::engine::DeltaOut>,
) -> Vec<DeltaTuple<'py>> {
    deltas
        .into_iter()
        .map(|d| {
            (
                d.partition,
                d.seq,
                d.chunk,
                d.chunks,
                PyBytes::new(py, &d.key),
                PyBytes::new(py, &d.value),
            )
        })
        .collect()
}

fn cell_tuple(code: String, segment: String, bucket: i64, cell: Cell) -> CellTuple {
    let text = |n: Option<crate::dec::Dec>| n.map(|n| n.canonical_text());
    let count = cell.count;
    let parts = cell.parts();
    let (latest_ts, latest) = match parts.latest {
        Some((ts, value)) => (Some(ts), Some(value.canonical_text())),
        None => (None, None),
    };
    (
        code,
        segment,
        bucket,
        count,
        text(parts.sum),
        text(parts.min),
        text(parts.max),
        latest_ts,
        latest,
        parts.unique.map(|u| u.into_vec()).unwrap_or_default(),
    )
}

#[pyclass(module = "meterline_native", name = "Engine")]
struct PyEngine {
    engine: Engine,
    too_old: String,
    too_new: String,
}

#[pymethods]
impl PyEngine {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        partitions: u32,
        past_ms: i64,
        future_ms: i64,
        too_old: String,
        too_new: String,
        retention_days: i64,
        max_uids_per_slot: usize,
        max_delta_bytes: usize,
        max_segment_bytes: usize,
    ) -> PyResult<Self> {
        if partitions == 0 {
            return Err(PyValueError::new_err("partitions must be at least 1"));
        }
        let mut engine = Engine::new(Config {
            partitions,
            past_ms,
            retention_days,
            max_uids_per_slot,
            max_delta_bytes,
            max_segment_bytes,
        });
        engine.rules = None;
        let _ = future_ms;
        Ok(PyEngine {
            engine,
            too_old,
            too_new,
        })
    }

    /// The compiled catalog as JSON (see `catalog::read`) and the horizon in ms.
    fn set_catalog(&mut self, spec: &[u8], past_ms: i64, future_ms: i64) -> PyResult<()> {
        guarded(|| {
            let (meters, plan) = catalog::read(spec).map_err(PyValueError::new_err)?;
            self.engine.rules = Some(Rules {
                meters,
                past_ms,
                future_ms,
                too_old: self.too_old.clone(),
                too_new: self.too_new.clone(),
            });
            self.engine.plan = plan;
            Ok(())
        })
    }

    fn set_boundaries(&mut self, account: String, boundaries: Vec<i64>) {
        if boundaries.is_empty() {
            self.engine.boundaries.remove(&account);
        } else {
            self.engine.boundaries.insert(account, boundaries);
        }
    }

    fn set_locked(&mut self, account: String, periods: Vec<(i64, i64, String)>) {
        if periods.is_empty() {
            self.engine.locked.remove(&account);
        } else {
            self.engine.locked.insert(account, periods);
        }
    }

    /// ("help", [(message, index)], [message]) when Python must judge some first, else
    /// ("done", deltas, rejected, forwards, (accepted, duplicates, newest, judged)).
    fn process<'py>(
        &mut self,
        py: Python<'py>,
        values: Vec<Option<PyBackedBytes>>,
        partitions: Vec<i64>,
        now_ms: i64,
        decided: HashMap<(usize, usize), (String, String, String, i64)>,
        replaced: HashMap<usize, (String, String, Vec<u8>)>,
    ) -> PyResult<PyObject> {
        guarded(|| {
            let messages: Vec<Message> = values
                .iter()
                .zip(&partitions)
                .map(|(value, partition)| Message {
                    value: value.as_deref(),
                    partition: *partition,
                })
                .collect();
            let decided: HashMap<(usize, usize), Override> = decided
                .into_iter()
                .map(|(key, (kind, field, reason, ts))| {
                    (
                        key,
                        if kind == "ts" {
                            Override::Ts(ts)
                        } else {
                            Override::Reject(field, reason)
                        },
                    )
                })
                .collect();
            let replaced: HashMap<usize, MessageOverride> = replaced
                .into_iter()
                .map(|(key, (kind, reason, bytes))| {
                    (
                        key,
                        if kind == "replace" {
                            MessageOverride::Replace(bytes)
                        } else {
                            MessageOverride::Reject(reason)
                        },
                    )
                })
                .collect();
            // Python threads go on while a batch is judged and folded
            let engine = &mut self.engine;
            let outcome = py
                .allow_threads(|| engine.process(&messages, now_ms, &decided, &replaced))
                .map_err(PyRuntimeError::new_err)?;
            match outcome {
                Outcome::Help(measurements, messages) => {
                    ("help", measurements, messages).into_py_any(py)
                }
                Outcome::Done(done) => {
                    let rejected: Vec<(usize, Option<usize>, String, String)> = done
                        .rejected
                        .into_iter()
                        .map(|r| (r.message, r.index, r.field, r.reason))
                        .collect();
                    (
                        "done",
                        delta_tuples(py, done.deltas),
                        rejected,
                        done.forwards,
                        (done.accepted, done.duplicates, done.newest, done.judged),
                    )
                        .into_py_any(py)
                }
            }
        })
    }

    #[pyo3(signature = (partitions=None))]
    fn expire<'py>(
        &mut self,
        py: Python<'py>,
        partitions: Option<Vec<i64>>,
    ) -> PyResult<Vec<DeltaTuple<'py>>> {
        guarded(|| Ok(delta_tuples(py, self.engine.expire(partitions))))
    }

    #[allow(clippy::type_complexity)]
    fn snapshot<'py>(
        &mut self,
        py: Python<'py>,
        partition: i64,
    ) -> PyResult<(
        i64,
        Vec<(Bound<'py, PyBytes>, Option<Bound<'py, PyBytes>>)>,
        (Bound<'py, PyBytes>, Bound<'py, PyBytes>),
        Vec<Bound<'py, PyBytes>>,
    )> {
        guarded(|| {
            let round = self.engine.snapshot(partition);
            let records = round
                .records
                .iter()
                .map(|(key, value)| {
                    (
                        PyBytes::new(py, key),
                        value.as_ref().map(|v| PyBytes::new(py, v)),
                    )
                })
                .collect();
            let marker = (
                PyBytes::new(py, &round.marker.0),
                PyBytes::new(py, &round.marker.1),
            );
            let obsolete = round.obsolete.iter().map(|k| PyBytes::new(py, k)).collect();
            Ok((round.seq, records, marker, obsolete))
        })
    }

    fn confirm_snapshot(
        &mut self,
        partition: i64,
        seq: i64,
        obsolete: Vec<Vec<u8>>,
    ) -> PyResult<()> {
        guarded(|| {
            self.engine.confirm_snapshot(partition, seq, &obsolete);
            Ok(())
        })
    }

    #[pyo3(signature = (key, value))]
    fn recover(&mut self, key: &[u8], value: Option<&[u8]>) -> PyResult<()> {
        guarded(|| {
            self.engine
                .recover(key, value)
                .map_err(PyValueError::new_err)
        })
    }

    #[pyo3(signature = (key, value))]
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> PyResult<()> {
        guarded(|| {
            self.engine
                .restore(key, value)
                .map_err(PyValueError::new_err)
        })
    }

    fn apply(&mut self, value: &[u8]) -> PyResult<(i64, i64, i64, bool)> {
        guarded(|| self.engine.apply(value).map_err(PyValueError::new_err))
    }

    fn next_seq(&self, partition: i64) -> i64 {
        self.engine.next_seq(partition)
    }

    fn revoke(&mut self, partition: i64) {
        self.engine.revoke(partition)
    }

    #[pyo3(signature = (account, codes, start, end, bucket_ms=None, by_segment=false))]
    fn query(
        &self,
        account: &str,
        codes: Vec<String>,
        start: i64,
        end: i64,
        bucket_ms: Option<i64>,
        by_segment: bool,
    ) -> PyResult<Vec<CellTuple>> {
        guarded(|| {
            Ok(self
                .engine
                .query(account, &codes, start, end, bucket_ms, by_segment)
                .into_iter()
                .map(|(code, segment, bucket, cell)| cell_tuple(code, segment, bucket, cell))
                .collect())
        })
    }

    fn accounts(&self, partitions: Vec<i64>, start: i64, end: i64) -> Vec<String> {
        self.engine.accounts(&partitions, start, end)
    }

    fn account_hours(&self) -> usize {
        self.engine.account_hours()
    }

    /// Test only: panic while judging ("validate") or folding ("fold") this uid, or
    /// committing ("commit") this account.
    #[pyo3(signature = (stage=None, uid=None))]
    fn _panic_on(&mut self, stage: Option<String>, uid: Option<String>) {
        self.engine.panic_on = stage.zip(uid);
    }
}

/// `mi_option_purge_delay` (mimalloc.h): how long freed memory is kept before it goes back
/// to the OS.
const MI_OPTION_PURGE_DELAY: i32 = 15;

#[pymodule]
fn meterline_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // A batch frees what it read; by default mimalloc returns it to the OS after 10 ms and
    // the next batch faults it back in page by page. Batches come more often than that:
    // keep freed memory for two seconds.
    // (MIMALLOC_PURGE_DELAY in the environment, in ms, says otherwise)
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 2000) };
    }
    module.add_class::<PyEngine>()?;
    Ok(())
}
