//! Workflow state machines through N-API: a class whose methods are the calls of
//! `orrery_core::workflow::wire`. Workflow calls come once per step, not per message, so plain
//! methods (~0.3 µs each) are fast enough and no call block is needed; records leave through a
//! buffer JS owns (see `drain_into`). Handles, tokens, outcomes, indexes and times pass as `f64`
//! to the wire functions, which check them for both engines (napi's `u32` would wrap or truncate
//! a bad one silently).

use napi::bindgen_prelude::Float64Array;
use napi_derive::napi;
use orrery_core::workflow::wire;
use orrery_core::{WorkflowError, Workflows};

use crate::error::{to_js, Result};

/// Owns one workflow core; `close` releases it at once (later calls fail with `CLOSED`).
#[napi]
pub struct NativeWorkflows {
    core: Option<Workflows>,
    /// The JS-owned buffer `drain_into` writes records into.
    out: Option<Float64Array>,
    /// Records drained from the core that did not fit `out` yet.
    pending: Vec<f64>,
}

impl NativeWorkflows {
    fn core(&mut self) -> Result<&mut Workflows> {
        self.core.as_mut().ok_or_else(|| to_js(WorkflowError::Closed))
    }
}

#[napi]
impl NativeWorkflows {
    /// An empty core.
    #[napi(constructor, catch_unwind)]
    #[allow(clippy::new_without_default, reason = "a JS constructor")]
    pub fn new() -> Self {
        Self { core: Some(Workflows::default()), out: None, pending: Vec::new() }
    }

    /// Checks and keeps a program; returns its definition id.
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
    pub fn define(&mut self, program: Float64Array) -> Result<u32> {
        self.core()?.define(&program).map_err(to_js)
    }

    /// Starts a run of `def`, failing at `deadline` (`NO_DEADLINE`: none); returns its handle.
    #[napi(catch_unwind)]
    pub fn start(&mut self, def: f64, seed: f64, now: f64, deadline: f64) -> Result<u32> {
        wire::start(self.core()?, def, seed, now, deadline).map_err(to_js)
    }

    /// A step attempt's outcome; false when the token is stale.
    #[napi(catch_unwind)]
    pub fn complete(&mut self, run: f64, token: f64, outcome: f64, now: f64) -> Result<bool> {
        wire::complete(self.core()?, run, token, outcome, now).map_err(to_js)
    }

    /// A decision's value; false when the token is stale.
    #[napi(catch_unwind)]
    pub fn decide(&mut self, run: f64, token: f64, value: f64, now: f64) -> Result<bool> {
        wire::decide(self.core()?, run, token, value, now).map_err(to_js)
    }

    /// A signal (by index) reached the run.
    #[napi(catch_unwind)]
    pub fn signal(&mut self, run: f64, index: f64, now: f64) -> Result<()> {
        wire::signal(self.core()?, run, index, now).map_err(to_js)
    }

    /// Cancels a run.
    #[napi(catch_unwind)]
    pub fn cancel(&mut self, run: f64, now: f64) -> Result<()> {
        wire::cancel(self.core()?, run, now).map_err(to_js)
    }

    /// Fires a timer; false when it is no longer armed.
    #[napi(catch_unwind)]
    pub fn fire(&mut self, run: f64, timer: f64, now: f64) -> Result<bool> {
        wire::fire(self.core()?, run, timer, now).map_err(to_js)
    }

    /// The timers due at `now`: `[run, timer, ...]`.
    #[napi(catch_unwind)]
    pub fn due(&mut self, now: f64) -> Result<Float64Array> {
        wire::due(self.core()?, now).map(Float64Array::new).map_err(to_js)
    }

    /// When the next timer is due (`NO_DEADLINE` when none).
    #[napi(catch_unwind)]
    pub fn next_deadline(&mut self) -> Result<f64> {
        Ok(self.core()?.next_deadline())
    }

    /// Queues again the records of everything in flight in a run.
    #[napi(catch_unwind)]
    pub fn outstanding(&mut self, run: f64) -> Result<()> {
        wire::outstanding(self.core()?, run).map_err(to_js)
    }

    /// Hands over the buffer `drainInto` writes records into (again after growing it).
    #[napi(catch_unwind)]
    pub fn use_out(&mut self, out: Float64Array) {
        self.out = Some(out);
    }

    /// Writes the records queued since the last drain into the `useOut` buffer: returns how many
    /// numbers, or minus the length the buffer needs (the records wait for the next call). A
    /// `Float64Array` made per drain cost ~2 µs (an external buffer and its finalizer), most
    /// of a whole run's time; JS copies what it keeps out of this one instead.
    #[napi(catch_unwind)]
    #[allow(unsafe_code, reason = "writing the JS-owned buffer needs napi's unsafe as_mut")]
    pub fn drain_into(&mut self) -> Result<f64> {
        let drained = self.core()?.drain();
        if self.pending.is_empty() {
            self.pending = drained;
        } else {
            self.pending.extend(drained);
        }
        let len = self.pending.len();
        let Some(out) = self.out.as_mut() else {
            return Ok(-(len as f64));
        };
        // SAFETY: the call is synchronous on the JS thread that owns the buffer; no JS code runs
        // until it returns, and the slice does not outlive it.
        let out = unsafe { out.as_mut() };
        let Some(target) = out.get_mut(..len) else {
            return Ok(-(len as f64));
        };
        target.copy_from_slice(&self.pending);
        self.pending.clear();
        Ok(len as f64)
    }

    /// Forgets a run.
    #[napi(catch_unwind)]
    pub fn release(&mut self, run: f64) -> Result<()> {
        wire::release(self.core()?, run).map_err(to_js)
    }

    /// Releases the core now rather than at finalisation.
    #[napi(catch_unwind)]
    pub fn close(&mut self) {
        self.core = None;
        self.out = None;
        self.pending = Vec::new();
    }
}
