//! Orrery's N-API engine. Thin glue only: every rule lives in `orrery-core`.
//!
//! Every export catches panics (`catch_unwind`), so a bug in the core becomes a JS error with
//! code `PANIC` and the Node process lives on.

#![allow(clippy::must_use_candidate, reason = "exports are called from JS, where #[must_use] means nothing")]

pub mod bus;
pub mod bus_calls;
pub mod bus_disk;
pub mod call_block;
pub mod diagnostics;
pub mod disk;
pub mod error;
pub mod mesh;
pub mod nats_wire;
pub mod shared;
pub mod store;
pub mod workflow;
