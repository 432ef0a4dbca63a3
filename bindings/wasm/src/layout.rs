//! The frame layout constants, for the TS layer to check against its own copy.

use wasm_bindgen::prelude::*;

/// The frame layout constants as `name=value` strings.
#[wasm_bindgen(js_name = frameLayout)]
#[must_use]
pub fn frame_layout() -> Vec<String> {
    orrery_core::frame::LAYOUT.iter().map(|(name, value)| format!("{name}={value}")).collect()
}

/// The instance's linear memory, through which `WasmBus::drain` hands records over.
#[wasm_bindgen(js_name = wasmMemory)]
#[must_use]
pub fn wasm_memory() -> JsValue {
    wasm_bindgen::memory()
}
