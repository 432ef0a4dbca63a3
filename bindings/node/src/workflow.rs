//! Workflow state machines through N-API: a class whose methods are the calls of
//! `orrery_core::workflow::wire` (methods on `Workflows`). Workflow calls come once per step,
//! not per message, so plain methods (~0.3 µs each) are fast enough and no call block is
//! needed; records leave through a buffer JS owns (see `drain_into`). Handles, tokens,
//! outcomes and indexes arrive as `f64` and are checked here, so a NaN, negative, fractional or
//! huge one is `INVALID_ARGUMENT`, word for word as in the wasm engine (napi's `u32` would wrap
//! or truncate it silently).

use napi::bindgen_prelude::Float64Array;
use napi_derive::napi;
use orrery_core::{WorkflowError, Workflows};

use crate::error::{to_js, Result};

/// A handle, token, timer or index as the core takes it: a whole number from 0 to 2^32 - 1.
fn whole(value: f64, argument: &'static str) -> Result<u32> {
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
fn time(now: f64) -> Result<f64> {
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
fn outcome(value: f64) -> Result<u8> {
    whole(value, "outcome").ok().and_then(|v| u8::try_from(v).ok()).ok_or_else(|| {
        to_js(WorkflowError::InvalidArgument {
            argument: "outcome",
            reason: format!("must be 0 (ok), 1 (transient) or 2 (permanent), got {value}"),
        })
    })
}

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

    /// Starts a run of `def`; returns its handle.
    #[napi(catch_unwind)]
    pub fn start(&mut self, def: f64, seed: f64, now: f64) -> Result<u32> {
        let def = whole(def, "definition")?;
        self.core()?.start(def, seed, now).map_err(to_js)
    }

    /// A step attempt's outcome; false when the token is stale.
    #[napi(catch_unwind)]
    pub fn complete(&mut self, run: f64, token: f64, outcome: f64, now: f64) -> Result<bool> {
        let (run, token, outcome) = (whole(run, "run")?, whole(token, "token")?, self::outcome(outcome)?);
        self.core()?.complete(run, token, outcome, now).map_err(to_js)
    }

    /// A decision's value; false when the token is stale.
    #[napi(catch_unwind)]
    pub fn decide(&mut self, run: f64, token: f64, value: f64, now: f64) -> Result<bool> {
        let (run, token) = (whole(run, "run")?, whole(token, "token")?);
        self.core()?.decide(run, token, value, now).map_err(to_js)
    }

    /// A signal (by index) reached the run.
    #[napi(catch_unwind)]
    pub fn signal(&mut self, run: f64, index: f64, now: f64) -> Result<()> {
        let (run, index) = (whole(run, "run")?, whole(index, "signal")?);
        self.core()?.signal(run, index, now).map_err(to_js)
    }

    /// Cancels a run.
    #[napi(catch_unwind)]
    pub fn cancel(&mut self, run: f64, now: f64) -> Result<()> {
        let run = whole(run, "run")?;
        self.core()?.cancel(run, now).map_err(to_js)
    }

    /// Fires a timer; false when it is no longer armed.
    #[napi(catch_unwind)]
    pub fn fire(&mut self, run: f64, timer: f64, now: f64) -> Result<bool> {
        let (run, timer) = (whole(run, "run")?, whole(timer, "timer")?);
        self.core()?.fire(run, timer, now).map_err(to_js)
    }

    /// The timers due at `now`: `[run, timer, ...]`.
    #[napi(catch_unwind)]
    pub fn due(&mut self, now: f64) -> Result<Float64Array> {
        let now = time(now)?;
        Ok(Float64Array::new(self.core()?.due(now)))
    }

    /// When the next timer is due (`NO_DEADLINE` when none).
    #[napi(catch_unwind)]
    pub fn next_deadline(&mut self) -> Result<f64> {
        Ok(self.core()?.next_deadline())
    }

    /// Queues again the records of everything in flight in a run.
    #[napi(catch_unwind)]
    pub fn outstanding(&mut self, run: f64) -> Result<()> {
        let run = whole(run, "run")?;
        self.core()?.outstanding(run).map_err(to_js)
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
        let run = whole(run, "run")?;
        self.core()?.release(run).map_err(to_js)
    }

    /// Releases the core now rather than at finalisation.
    #[napi(catch_unwind)]
    pub fn close(&mut self) {
        self.core = None;
        self.out = None;
        self.pending = Vec::new();
    }
}
