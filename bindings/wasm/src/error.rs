//! Core errors as JS `Error` objects with `code` set.

use orrery_core::Coded;
use wasm_bindgen::JsValue;

/// Turns a core error into a JS `Error` carrying its stable (boundary) code.
#[allow(clippy::needless_pass_by_value, reason = "shaped for map_err(to_js)")]
pub fn to_js<E: Coded + std::fmt::Display>(err: E) -> JsValue {
    let js = js_sys::Error::new(&err.to_string());
    // Setting a plain data property on a fresh Error cannot fail.
    let _ = js_sys::Reflect::set(&js, &JsValue::from_str("code"), &JsValue::from_str(err.boundary_code()));
    js.into()
}
