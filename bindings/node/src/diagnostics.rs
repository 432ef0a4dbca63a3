//! Module-level exports: the manifest's hash, the panic probe and the boundary floor.

use napi::bindgen_prelude::Uint8Array;
use napi_derive::napi;

/// The hash of the manifest this engine was built with (`orrery_core::manifest`), so the TS
/// layer can refuse an engine built from another one than its generated `manifest.ts`.
#[napi]
#[must_use]
pub fn manifest_hash() -> &'static str {
    orrery_core::manifest::hash()
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
