//! Workflow state machines through N-API, shaped like the mesh: the class owns a core's
//! lifetime (and its cold calls: `define`, `due`, `outstanding`, `useOut`), and the calls a run
//! makes at every step are plain functions that take the core's handle and their arguments from
//! this thread's workflow call block and give their results back in it. A class method cost
//! ~300 ns a call, and a seq-3 run makes about 17 of them; a call through the block costs tens
//! of ns. Handles, tokens, outcomes, indexes and times pass as `f64` to the wire functions of
//! `orrery_core::workflow::wire`, which check them for both engines.

use std::cell::RefCell;

use napi::bindgen_prelude::Float64Array;
use napi_derive::napi;
use orrery_core::slab::{self, Slab};
use orrery_core::workflow::wire;
use orrery_core::{WorkflowError, Workflows};

use crate::call_block::{self, Block};
use crate::error::{to_js, Code, Result};

/// One core and the JS-owned buffer its drains write into.
struct Engine {
    core: Workflows,
    out: Option<Float64Array>,
}

thread_local! {
    /// This thread's workflow cores; a core belongs to the thread that made it.
    static ENGINES: RefCell<Slab<Engine>> = RefCell::new(Slab::default());
    /// The workflow call block: slot 0 the core's handle, then the arguments; results from slot 0.
    static CALL: Block = const { RefCell::new(None) };
}

fn closed() -> napi::Error<Code> {
    to_js(WorkflowError::Closed)
}

fn with<T>(handle: u32, call: impl FnOnce(&mut Engine) -> std::result::Result<T, WorkflowError>) -> Result<T> {
    ENGINES.with(|engines| {
        let mut engines = engines.borrow_mut();
        let engine = engines.get_mut(handle).ok_or_else(closed)?;
        call(engine).map_err(to_js)
    })
}

/// A hot call: the core's handle in slot 0, arguments in slots 1..; its one result into slot 0.
fn with_call(
    call: impl FnOnce(&mut Workflows, call_block::Args) -> std::result::Result<f64, WorkflowError>,
) -> Result<()> {
    call_block::run(&CALL, closed, |handle, args| {
        with(handle, |engine| call(&mut engine.core, args).map(|result| [result]))
    })
}

/// Owns one workflow core; `close` (or dropping it) releases the core (later calls: `CLOSED`).
#[napi]
pub struct NativeWorkflows {
    handle: u32,
}

impl Drop for NativeWorkflows {
    fn drop(&mut self) {
        let _ = ENGINES.try_with(|engines| engines.borrow_mut().remove(self.handle));
    }
}

#[napi]
impl NativeWorkflows {
    /// An empty core; `CAPACITY_EXCEEDED` when this thread holds as many as a slab can.
    #[napi(constructor, catch_unwind)]
    pub fn new() -> Result<Self> {
        let engine = Engine { core: Workflows::default(), out: None };
        let handle = ENGINES.with(|engines| engines.borrow_mut().insert(engine)).ok_or_else(|| {
            to_js(WorkflowError::Capacity { what: "workflow cores open on one thread", limit: slab::MAX_ENTRIES })
        })?;
        Ok(Self { handle })
    }

    /// The handle the hot calls name in slot 0 of the call block.
    #[napi(getter)]
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Checks and keeps a program; returns its definition id.
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
    pub fn define(&mut self, program: Float64Array) -> Result<u32> {
        with(self.handle, |engine| engine.core.define(&program))
    }

    /// The timers due at `now`: `[run, timer, ...]`.
    #[napi(catch_unwind)]
    pub fn due(&mut self, now: f64) -> Result<Float64Array> {
        with(self.handle, |engine| wire::due(&engine.core, now)).map(Float64Array::new)
    }

    /// Queues again the records of everything in flight in a run.
    #[napi(catch_unwind)]
    pub fn outstanding(&mut self, run: f64) -> Result<()> {
        with(self.handle, |engine| wire::outstanding(&mut engine.core, run))
    }

    /// Hands over the buffer `workflowDrain` writes records into (again after growing it).
    #[napi(catch_unwind)]
    pub fn use_out(&mut self, out: Float64Array) -> Result<()> {
        with(self.handle, |engine| {
            engine.out = Some(out);
            Ok(())
        })
    }

    /// Releases the core now rather than at finalisation.
    #[napi(catch_unwind)]
    pub fn close(&mut self) {
        let _ = ENGINES.try_with(|engines| engines.borrow_mut().remove(self.handle));
    }
}

/// Hands this thread's workflow call block over (once per thread).
#[napi(catch_unwind)]
pub fn workflow_use_call_block(block: Float64Array) {
    CALL.with(|slot| *slot.borrow_mut() = Some(block));
}

/// Starts a run (block: def, seed, now, deadline; `NO_DEADLINE`: none); its handle in slot 0.
#[napi(catch_unwind)]
pub fn workflow_start() -> Result<()> {
    with_call(|w, [def, seed, now, deadline]| wire::start(w, def, seed, now, deadline).map(f64::from))
}

/// A step attempt's outcome (block: run, token, outcome, now); slot 0: 0 when the token is stale.
#[napi(catch_unwind)]
pub fn workflow_complete() -> Result<()> {
    with_call(|w, [run, token, outcome, now]| {
        wire::complete(w, run, token, outcome, now).map(|fresh| f64::from(u8::from(fresh)))
    })
}

/// A decision's value (block: run, token, value, now); slot 0: 0 when the token is stale.
#[napi(catch_unwind)]
pub fn workflow_decide() -> Result<()> {
    with_call(|w, [run, token, value, now]| {
        wire::decide(w, run, token, value, now).map(|fresh| f64::from(u8::from(fresh)))
    })
}

/// A signal, by index, reached a run (block: run, index, now).
#[napi(catch_unwind)]
pub fn workflow_signal() -> Result<()> {
    with_call(|w, [run, index, now, _]| wire::signal(w, run, index, now).map(|()| 0.0))
}

/// Cancels a run (block: run, now).
#[napi(catch_unwind)]
pub fn workflow_cancel() -> Result<()> {
    with_call(|w, [run, now, _, _]| wire::cancel(w, run, now).map(|()| 0.0))
}

/// Fires a timer (block: run, timer, now); slot 0: 0 when it is no longer armed.
#[napi(catch_unwind)]
pub fn workflow_fire() -> Result<()> {
    with_call(|w, [run, timer, now, _]| wire::fire(w, run, timer, now).map(|armed| f64::from(u8::from(armed))))
}

/// When the next timer is due, into slot 0 (`NO_DEADLINE` when none).
#[napi(catch_unwind)]
pub fn workflow_next_deadline() -> Result<()> {
    with_call(|w, _| Ok(w.next_deadline()))
}

/// Forgets a run (block: run).
#[napi(catch_unwind)]
pub fn workflow_release() -> Result<()> {
    with_call(|w, [run, _, _, _]| wire::release(w, run).map(|()| 0.0))
}

/// Writes the records queued since the last drain into the `useOut` buffer; slot 0: how many
/// numbers, or minus the length the buffer needs (the records wait for the next call).
#[napi(catch_unwind)]
#[allow(unsafe_code, reason = "writing the JS-owned buffer needs napi's unsafe as_mut")]
pub fn workflow_drain() -> Result<()> {
    call_block::run(&CALL, closed, |handle, _| {
        with(handle, |engine| {
            let out: &mut [f64] = match engine.out.as_mut() {
                // SAFETY: the call is synchronous on the JS thread that owns the buffer; no JS
                // code runs until it returns, and the slice does not outlive it.
                Some(out) => unsafe { out.as_mut() },
                None => &mut [],
            };
            Ok([match engine.core.drain_into(out) {
                Ok(words) => words as f64,
                Err(needed) => -(needed as f64),
            }])
        })
    })
}
