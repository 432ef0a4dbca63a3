//! Workflow state machines as a JS class whose methods are the calls of
//! `orrery_core::workflow::wire`. Handles, tokens, outcomes, indexes and times pass as `f64` to
//! the wire functions, which check them for both engines (wasm-bindgen's `u32` would wrap or
//! truncate a bad one silently). `due` comes back as a `Float64Array` copy; drained records stay
//! in the instance's memory (`drainShared`, `drainedPtr`) for JS to copy into a buffer of its own:
//! a copy made per drain was an `ArrayBuffer` each time, and their external memory set off a
//! scavenge every ~40 runs.

use orrery_core::workflow::wire;
use orrery_core::Workflows;
use wasm_bindgen::prelude::*;

use crate::error::to_js;

/// One workflow core.
#[wasm_bindgen]
pub struct WasmWorkflows {
    core: Workflows,
    /// The records of the last `drainShared`.
    drained: Vec<f64>,
}

#[wasm_bindgen]
impl WasmWorkflows {
    /// An empty core.
    #[wasm_bindgen(constructor)]
    #[allow(clippy::new_without_default, reason = "a JS constructor")]
    pub fn new() -> WasmWorkflows {
        Self { core: Workflows::default(), drained: Vec::new() }
    }

    /// Checks and keeps a program; returns its definition id.
    pub fn define(&mut self, program: &[f64]) -> Result<u32, JsValue> {
        self.core.define(program).map_err(to_js)
    }

    /// Starts a run of `def`, failing at `deadline` (`NO_DEADLINE`: none); returns its handle.
    pub fn start(&mut self, def: f64, seed: f64, now: f64, deadline: f64) -> Result<u32, JsValue> {
        wire::start(&mut self.core, def, seed, now, deadline).map_err(to_js)
    }

    /// A step attempt's outcome; false when the token is stale.
    pub fn complete(&mut self, run: f64, token: f64, outcome: f64, now: f64) -> Result<bool, JsValue> {
        wire::complete(&mut self.core, run, token, outcome, now).map_err(to_js)
    }

    /// A decision's value; false when the token is stale.
    pub fn decide(&mut self, run: f64, token: f64, value: f64, now: f64) -> Result<bool, JsValue> {
        wire::decide(&mut self.core, run, token, value, now).map_err(to_js)
    }

    /// A signal (by index) reached the run.
    pub fn signal(&mut self, run: f64, index: f64, now: f64) -> Result<(), JsValue> {
        wire::signal(&mut self.core, run, index, now).map_err(to_js)
    }

    /// Cancels a run.
    pub fn cancel(&mut self, run: f64, now: f64) -> Result<(), JsValue> {
        wire::cancel(&mut self.core, run, now).map_err(to_js)
    }

    /// Fires a timer; false when it is no longer armed.
    pub fn fire(&mut self, run: f64, timer: f64, now: f64) -> Result<bool, JsValue> {
        wire::fire(&mut self.core, run, timer, now).map_err(to_js)
    }

    /// The timers due at `now`: `[run, timer, ...]`.
    pub fn due(&self, now: f64) -> Result<Vec<f64>, JsValue> {
        wire::due(&self.core, now).map_err(to_js)
    }

    /// When the next timer is due (`NO_DEADLINE` when none).
    #[wasm_bindgen(js_name = nextDeadline)]
    pub fn next_deadline(&self) -> f64 {
        self.core.next_deadline()
    }

    /// Queues again the records of everything in flight in a run.
    pub fn outstanding(&mut self, run: f64) -> Result<(), JsValue> {
        wire::outstanding(&mut self.core, run).map_err(to_js)
    }

    /// Takes the records queued since the last drain (dropping the ones taken before): how many
    /// numbers, at `drainedPtr` until the next call.
    #[wasm_bindgen(js_name = drainShared)]
    pub fn drain_shared(&mut self) -> u32 {
        self.core.swap_outbox(&mut self.drained);
        u32::try_from(self.drained.len()).unwrap_or(u32::MAX)
    }

    /// Where the records of the last `drainShared` are in the instance's memory.
    #[wasm_bindgen(js_name = drainedPtr)]
    pub fn drained_ptr(&self) -> u32 {
        self.drained.as_ptr() as u32
    }

    /// Forgets a run.
    pub fn release(&mut self, run: f64) -> Result<(), JsValue> {
        wire::release(&mut self.core, run).map_err(to_js)
    }
}
