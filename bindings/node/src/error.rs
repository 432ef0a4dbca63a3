//! Core errors as JS errors: the napi status string becomes `error.code`.

use orrery_core::Coded;

/// A napi status carrying a core error code, so the thrown JS error has `code` set.
pub struct Code(pub &'static str);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0
    }
}

/// The result type of every export.
pub type Result<T> = napi::Result<T, Code>;

/// Turns a core error into a JS error with its stable (boundary) code.
#[allow(clippy::needless_pass_by_value, reason = "shaped for map_err(to_js)")]
pub fn to_js<E: Coded + std::fmt::Display>(err: E) -> napi::Error<Code> {
    napi::Error::new(Code(err.boundary_code()), err.to_string())
}
