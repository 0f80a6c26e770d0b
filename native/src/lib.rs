//! meterline's native usage engine: `streams.usage.engine.contract.UsageEngine` in Rust,
//! byte for byte the answers of the Python reference (`streams.usage.engine.reference`).
//!
//! One module per stage: `decode` (JSON with exact numbers), `validate` (the catalog's
//! rules), `expressions` (derived fields), `dec` (exact decimals), `dedup` (uid hashes,
//! partitions), `fold` (cells), `wire` (delta and snapshot bytes), `state` (a
//! partition's memory), `engine` (process), `recovery` (apply, restore, expire,
//! snapshots), `queries` (reads); `python` binds them (feature "python").

pub mod catalog;
pub mod dec;
pub mod decode;
pub mod dedup;
pub mod engine;
pub mod expressions;
pub mod fold;
pub mod queries;
pub mod recovery;
pub mod state;
pub mod validate;
pub mod wire;

#[cfg(feature = "python")]
mod python;
