//! A thread's call block: a JS-owned `Float64Array` through which the hottest calls take their
//! arguments and give back their results, because a napi-rs function costs ~20 ns a call
//! without arguments and ~90 ns with even one. Slot 0 names the target (a store's handle, a bus
//! endpoint's slot), the next [`ARGS`] slots hold the arguments, and results are written from
//! slot 0 on. The slot counts are the manifest's (`CALL_BLOCK` on the TS side, which allocates
//! the blocks).

use std::cell::RefCell;
use std::thread::LocalKey;

use napi::bindgen_prelude::Float64Array;
use orrery_core::manifest::call_block::{ARGS, SLOTS};

use crate::error::{Code, Result};

/// A thread's call block, once JS has handed it over.
pub type Block = RefCell<Option<Float64Array>>;

/// The argument slots [`run`] hands a call.
pub type Args = [f64; ARGS];

const _: () = assert!(ARGS < SLOTS, "the target and the arguments fit the block");

/// A slot's value as a `u32`, if it is one. Compared after a round trip rather than with
/// `fract()`, which is a libm call on every read.
#[must_use]
pub fn whole(value: f64) -> Option<u32> {
    (value >= 0.0 && value <= f64::from(u32::MAX) && f64::from(value as u32) == value).then_some(value as u32)
}

/// Runs `call` with the target named in slot 0 and the [`ARGS`] argument slots, then writes the
/// results it returns into slots 0 on. Fails with `missing()` when JS never handed a block
/// over or slot 0 names nothing.
#[allow(unsafe_code, reason = "reading and writing the JS-owned call block needs napi's unsafe as_mut")]
pub fn run<const N: usize>(
    block: &'static LocalKey<Block>,
    missing: fn() -> napi::Error<Code>,
    call: impl FnOnce(u32, Args) -> Result<[f64; N]>,
) -> Result<()> {
    block.with(|block| {
        let mut block = block.borrow_mut();
        let block = block.as_mut().ok_or_else(missing)?;
        // SAFETY: the call is synchronous on the JS thread that owns the block; no JS code runs
        // until it returns, and the slice does not outlive it.
        let slots = unsafe { block.as_mut() };
        let target = whole(slots.first().copied().unwrap_or(f64::NAN)).ok_or_else(missing)?;
        let args: Args = std::array::from_fn(|i| slots.get(i + 1).copied().unwrap_or(f64::NAN));
        let results = call(target, args)?;
        for (slot, result) in slots.iter_mut().zip(results) {
            *slot = result;
        }
        Ok(())
    })
}

/// Like [`run`], for calls whose arguments or results do not fit [`ARGS`] slots: `call` gets the
/// target named in slot 0 and the whole block (arguments from slot 1), to read and write.
#[allow(unsafe_code, reason = "reading and writing the JS-owned call block needs napi's unsafe as_mut")]
pub fn run_slots<T>(
    block: &'static LocalKey<Block>,
    missing: fn() -> napi::Error<Code>,
    call: impl FnOnce(u32, &mut [f64]) -> Result<T>,
) -> Result<T> {
    block.with(|block| {
        let mut block = block.borrow_mut();
        let block = block.as_mut().ok_or_else(missing)?;
        // SAFETY: as in `run`.
        let slots = unsafe { block.as_mut() };
        let target = slots.first().copied().and_then(whole).ok_or_else(missing)?;
        call(target, slots)
    })
}
