//! Module-level exports: the frame layout constants, the panic probe and the boundary floor.

use napi::bindgen_prelude::Uint8Array;
use napi_derive::napi;

/// The frame layout constants as `name=value` strings, so the TS layer can check that its
/// own copy matches the core it loaded.
#[napi]
#[must_use]
pub fn frame_layout() -> Vec<String> {
    orrery_core::frame::LAYOUT.iter().map(|(name, value)| format!("{name}={value}")).collect()
}

/// Panics on purpose. The test suite calls it to prove a core panic reaches JS as an error
/// with code `PANIC` while the process lives on.
///
/// # Panics
/// Always, with `message`.
#[napi(catch_unwind)]
#[allow(clippy::needless_pass_by_value, reason = "napi passes owned strings")]
pub fn panic_for_tests(message: String) {
    panic!("{message}");
}

/// The boundary floor: copies `batch` into Rust-owned memory (as a publish stores a frame) and
/// back out into `out` (as a drain hands it over); returns the bytes copied. Benchmarks measure
/// the bare cost of crossing with the same bytes against it.
#[napi(catch_unwind)]
#[allow(clippy::needless_pass_by_value, reason = "napi hands over JS-owned views")]
#[allow(unsafe_code, reason = "writing into a JS-owned buffer needs napi's unsafe as_mut")]
pub fn echo_batch(batch: Uint8Array, mut out: Uint8Array) -> u32 {
    let owned: Vec<u8> = batch.to_vec();
    // SAFETY: synchronous call on the JS thread that owns `out`; nothing else touches it meanwhile.
    let out = unsafe { out.as_mut() };
    let n = owned.len().min(out.len());
    out[..n].copy_from_slice(&owned[..n]);
    n as u32
}
