//! Reports a panic's message to the host before the instance traps.

use std::cell::RefCell;

use wasm_bindgen::prelude::*;

thread_local! {
    static REPORTER: RefCell<Option<js_sys::Function>> = const { RefCell::new(None) };
}

/// Installs the panic hook; `reporter` is called with the panic message just before the trap.
#[wasm_bindgen(js_name = setPanicReporter)]
pub fn set_panic_reporter(reporter: js_sys::Function) {
    REPORTER.with(|r| *r.borrow_mut() = Some(reporter));
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        REPORTER.with(|r| {
            if let Ok(guard) = r.try_borrow() {
                if let Some(f) = guard.as_ref() {
                    let _ = f.call1(&JsValue::NULL, &JsValue::from_str(&message));
                }
            }
        });
    }));
}

/// Panics on purpose, so tests can prove what a core panic does to the engine.
///
/// # Panics
/// Always, with `message`.
#[wasm_bindgen(js_name = panicForTests)]
pub fn panic_for_tests(message: &str) {
    panic!("{message}");
}
