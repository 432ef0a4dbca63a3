//! Workflow state machines as a JS class whose methods are the calls of
//! `orrery_core::workflow::wire` (methods on `Workflows`). Handles, tokens, outcomes and indexes
//! arrive as `f64` and are checked here, so a NaN, negative, fractional or huge one is
//! `INVALID_ARGUMENT`, word for word as in the native engine (wasm-bindgen's `u32` would wrap or
//! truncate it silently). `drain` and `due` come back as `Float64Array` copies, valid after
//! later calls.

use orrery_core::{WorkflowError, Workflows};
use wasm_bindgen::prelude::*;

use crate::error::to_js;

/// A handle, token, timer or index as the core takes it: a whole number from 0 to 2^32 - 1.
fn whole(value: f64, argument: &'static str) -> Result<u32, JsValue> {
    if value >= 0.0 && value <= f64::from(u32::MAX) && value.fract() == 0.0 {
        Ok(value as u32)
    } else {
        Err(to_js(WorkflowError::InvalidArgument {
            argument,
            reason: format!("must be a whole number from 0 to 2^32 - 1, got {value}"),
        }))
    }
}

/// A host time for `due`, which the core takes unchecked: a NaN would compare as due with every
/// timer. Refused as the core refuses it elsewhere.
fn time(now: f64) -> Result<f64, JsValue> {
    if now.is_finite() {
        Ok(now)
    } else {
        Err(to_js(WorkflowError::InvalidArgument {
            argument: "now",
            reason: format!("must be a finite time in ms, got {now}"),
        }))
    }
}

/// A step outcome: the core refuses any above 2, naming it; one that is no byte is refused here
/// with the same words.
fn outcome(value: f64) -> Result<u8, JsValue> {
    whole(value, "outcome").ok().and_then(|v| u8::try_from(v).ok()).ok_or_else(|| {
        to_js(WorkflowError::InvalidArgument {
            argument: "outcome",
            reason: format!("must be 0 (ok), 1 (transient) or 2 (permanent), got {value}"),
        })
    })
}

/// One workflow core.
#[wasm_bindgen]
pub struct WasmWorkflows {
    core: Workflows,
}

#[wasm_bindgen]
impl WasmWorkflows {
    /// An empty core.
    #[wasm_bindgen(constructor)]
    #[allow(clippy::new_without_default, reason = "a JS constructor")]
    pub fn new() -> WasmWorkflows {
        Self { core: Workflows::default() }
    }

    /// Checks and keeps a program; returns its definition id.
    pub fn define(&mut self, program: &[f64]) -> Result<u32, JsValue> {
        self.core.define(program).map_err(to_js)
    }

    /// Starts a run of `def`; returns its handle.
    pub fn start(&mut self, def: f64, seed: f64, now: f64) -> Result<u32, JsValue> {
        let def = whole(def, "definition")?;
        self.core.start(def, seed, now).map_err(to_js)
    }

    /// A step attempt's outcome; false when the token is stale.
    pub fn complete(&mut self, run: f64, token: f64, outcome: f64, now: f64) -> Result<bool, JsValue> {
        let (run, token, outcome) = (whole(run, "run")?, whole(token, "token")?, self::outcome(outcome)?);
        self.core.complete(run, token, outcome, now).map_err(to_js)
    }

    /// A decision's value; false when the token is stale.
    pub fn decide(&mut self, run: f64, token: f64, value: f64, now: f64) -> Result<bool, JsValue> {
        let (run, token) = (whole(run, "run")?, whole(token, "token")?);
        self.core.decide(run, token, value, now).map_err(to_js)
    }

    /// A signal (by index) reached the run.
    pub fn signal(&mut self, run: f64, index: f64, now: f64) -> Result<(), JsValue> {
        let (run, index) = (whole(run, "run")?, whole(index, "signal")?);
        self.core.signal(run, index, now).map_err(to_js)
    }

    /// Cancels a run.
    pub fn cancel(&mut self, run: f64, now: f64) -> Result<(), JsValue> {
        let run = whole(run, "run")?;
        self.core.cancel(run, now).map_err(to_js)
    }

    /// Fires a timer; false when it is no longer armed.
    pub fn fire(&mut self, run: f64, timer: f64, now: f64) -> Result<bool, JsValue> {
        let (run, timer) = (whole(run, "run")?, whole(timer, "timer")?);
        self.core.fire(run, timer, now).map_err(to_js)
    }

    /// The timers due at `now`: `[run, timer, ...]`.
    pub fn due(&self, now: f64) -> Result<Vec<f64>, JsValue> {
        Ok(self.core.due(time(now)?))
    }

    /// When the next timer is due (`NO_DEADLINE` when none).
    #[wasm_bindgen(js_name = nextDeadline)]
    pub fn next_deadline(&self) -> f64 {
        self.core.next_deadline()
    }

    /// Queues again the records of everything in flight in a run.
    pub fn outstanding(&mut self, run: f64) -> Result<(), JsValue> {
        let run = whole(run, "run")?;
        self.core.outstanding(run).map_err(to_js)
    }

    /// The records queued since the last drain.
    pub fn drain(&mut self) -> Vec<f64> {
        self.core.drain()
    }

    /// Forgets a run.
    pub fn release(&mut self, run: f64) -> Result<(), JsValue> {
        let run = whole(run, "run")?;
        self.core.release(run).map_err(to_js)
    }
}
