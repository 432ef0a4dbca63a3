//! Module-level exports: the frame layout constants and the panic probe.

use napi_derive::napi;

/// The frame layout constants as `name=value` strings, so the TS layer can check that its
/// own copy matches the core it loaded.
#[napi]
#[must_use]
pub fn frame_layout() -> Vec<String> {
    orrery_core::frame::LAYOUT
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
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
