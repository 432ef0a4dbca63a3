//! Orrery's WebAssembly engine. Thin glue only: every rule lives in `orrery-core`.
//!
//! wasm32 aborts on panic: the instance traps and cannot be trusted afterwards. The panic hook
//! installed here reports the message to the host first, so the TS layer can mark the engine
//! unusable and say why in every later error.

#![allow(clippy::must_use_candidate, reason = "exports are called from JS, where #[must_use] means nothing")]

pub mod bus;
pub mod error;
pub mod layout;
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[allow(unsafe_code, reason = "a global allocator is unsafe code by nature")]
mod memory;
pub mod mesh;
pub mod panic;
pub mod store;
pub mod workflow;
