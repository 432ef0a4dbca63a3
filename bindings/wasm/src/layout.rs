//! What the TS layer checks at start-up (the manifest's hash) and the instance's memory.

use wasm_bindgen::prelude::*;

/// The hash of the manifest this engine was built with (`orrery_core::manifest`), so the TS
/// layer can refuse an engine built from another one than its generated `manifest.ts`.
#[wasm_bindgen(js_name = manifestHash)]
#[must_use]
pub fn manifest_hash() -> String {
    orrery_core::manifest::hash().to_owned()
}

/// The instance's linear memory, through which `WasmBus::drain` hands records over.
#[wasm_bindgen(js_name = wasmMemory)]
#[must_use]
pub fn wasm_memory() -> JsValue {
    wasm_bindgen::memory()
}
