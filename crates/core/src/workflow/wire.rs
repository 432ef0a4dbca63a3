//! The calls both bindings make: numbers in, numbers out, every argument checked here once (a
//! NaN, a handle that is no whole number, an outcome above 2, a signal the program does not
//! have), so both engines refuse the same values in the same words and the bindings only
//! convert types. The free functions take every number as JS hands it over (`f64`) and check it
//! before the typed method on [`Workflows`] of the same name; napi's and wasm-bindgen's `u32`
//! would wrap or truncate a bad one silently.
//!
//! Inputs that move a run (`start`, `complete`, `decide`, `signal`, `cancel`, `fire`) take the
//! host's `now`; the host records each accepted one, in order, and replays them into a fresh
//! core to rebuild a run. Records come out of [`Workflows::drain`], `RECORD_WORDS` each.

use std::fmt::Display;

use super::codes::{MAX_SIGNALS, PERMANENT};
use super::program;
use super::run::{Ctx, Run};
use super::Workflows;
use crate::error::WorkflowError;
use crate::manifest::NO_DEADLINE;
use crate::slab::MAX_ENTRIES;
use crate::Millis;

fn bad(argument: &'static str, reason: impl Into<String>) -> WorkflowError {
    WorkflowError::InvalidArgument { argument, reason: reason.into() }
}

/// A handle, token, timer, signal index or definition id: a whole number from 0 to 2^32 - 1.
fn whole(value: f64, argument: &'static str) -> Result<u32, WorkflowError> {
    if value >= 0.0 && value <= f64::from(u32::MAX) && value.fract() == 0.0 {
        Ok(value as u32)
    } else {
        Err(bad(argument, format!("must be a whole number from 0 to 2^32 - 1, got {value}")))
    }
}

/// A host time: finite, as a NaN would compare as due with no timer and an infinity with all.
fn time(now: f64) -> Result<Millis, WorkflowError> {
    if now.is_finite() {
        Ok(now)
    } else {
        Err(bad("now", format!("must be a finite time in ms, got {now}")))
    }
}

fn bad_outcome(value: impl Display) -> WorkflowError {
    bad("outcome", format!("must be 0 (ok), 1 (transient) or 2 (permanent), got {value}"))
}

/// A step outcome: 0 (ok), 1 (transient) or 2 (permanent).
fn outcome(value: f64) -> Result<u8, WorkflowError> {
    whole(value, "outcome")
        .ok()
        .and_then(|v| u8::try_from(v).ok())
        .filter(|&v| v <= PERMANENT)
        .ok_or_else(|| bad_outcome(value))
}

/// [`Workflows::start`] with `def` as JS hands it over.
pub fn start(w: &mut Workflows, def: f64, seed: f64, now: f64, deadline: f64) -> Result<u32, WorkflowError> {
    w.start(whole(def, "definition")?, seed, now, deadline)
}

/// [`Workflows::complete`] with its numbers as JS hands them over.
pub fn complete(w: &mut Workflows, run: f64, token: f64, outcome: f64, now: f64) -> Result<bool, WorkflowError> {
    w.complete(whole(run, "run")?, whole(token, "token")?, self::outcome(outcome)?, now)
}

/// [`Workflows::decide`] with its numbers as JS hands them over.
pub fn decide(w: &mut Workflows, run: f64, token: f64, value: f64, now: f64) -> Result<bool, WorkflowError> {
    w.decide(whole(run, "run")?, whole(token, "token")?, value, now)
}

/// [`Workflows::signal`] with its numbers as JS hands them over.
pub fn signal(w: &mut Workflows, run: f64, index: f64, now: f64) -> Result<(), WorkflowError> {
    w.signal(whole(run, "run")?, whole(index, "signal")?, now)
}

/// [`Workflows::cancel`] with its numbers as JS hands them over.
pub fn cancel(w: &mut Workflows, run: f64, now: f64) -> Result<(), WorkflowError> {
    w.cancel(whole(run, "run")?, now)
}

/// [`Workflows::fire`] with its numbers as JS hands them over.
pub fn fire(w: &mut Workflows, run: f64, timer: f64, now: f64) -> Result<bool, WorkflowError> {
    w.fire(whole(run, "run")?, whole(timer, "timer")?, now)
}

/// [`Workflows::due`], refusing a time that is not finite.
pub fn due(w: &Workflows, now: f64) -> Result<Vec<f64>, WorkflowError> {
    Ok(w.due(time(now)?))
}

/// [`Workflows::outstanding`] with `run` as JS hands it over.
pub fn outstanding(w: &mut Workflows, run: f64) -> Result<(), WorkflowError> {
    w.outstanding(whole(run, "run")?)
}

/// [`Workflows::release`] with `run` as JS hands it over.
pub fn release(w: &mut Workflows, run: f64) -> Result<(), WorkflowError> {
    w.release(whole(run, "run")?)
}

impl Workflows {
    /// Decodes and checks a program; its definition id.
    pub fn define(&mut self, program: &[f64]) -> Result<u32, WorkflowError> {
        let program = program::decode(program)?;
        let id = u32::try_from(self.programs.len())
            .map_err(|_| WorkflowError::Capacity { what: "workflow definitions", limit: u32::MAX as usize })?;
        self.programs.push(program);
        Ok(id)
    }

    /// Starts a run of definition `def`; jitter comes from `seed` (its bits seed the run's
    /// random source). The run fails with `run-timeout` at `deadline` (host time;
    /// `NO_DEADLINE` for none), or at its root's timeout if that comes first: the host records
    /// the deadline with the start and replays it. The run's first records are in the outbox.
    pub fn start(&mut self, def: u32, seed: f64, now: Millis, deadline: Millis) -> Result<u32, WorkflowError> {
        time(now)?;
        if seed.is_nan() {
            return Err(bad("seed", "is NaN"));
        }
        if !(deadline.is_finite() || deadline == NO_DEADLINE) {
            return Err(bad("deadline", format!("must be a finite time in ms or NO_DEADLINE, got {deadline}")));
        }
        if def as usize >= self.programs.len() {
            return Err(WorkflowError::UnknownWorkflow(def));
        }
        let id = self
            .runs
            .insert(Run::new(def, seed.to_bits()))
            .ok_or(WorkflowError::Capacity { what: "workflow runs", limit: MAX_ENTRIES })?;
        self.with_run(id, now, |run, ctx| {
            run.begin(ctx, deadline);
            Ok(id)
        })
    }

    /// The run, its program and a context for one input.
    fn with_run<T>(
        &mut self,
        id: u32,
        now: Millis,
        body: impl FnOnce(&mut Run, &mut Ctx) -> Result<T, WorkflowError>,
    ) -> Result<T, WorkflowError> {
        time(now)?;
        let run = self.runs.get_mut(id).ok_or(WorkflowError::UnknownRun(id))?;
        let program = &self.programs[run.def as usize];
        let mut ctx = Ctx {
            program,
            timers: &mut self.timers,
            inflight: &mut self.inflight,
            pipes: &mut self.pipes,
            out: &mut self.outbox,
            id,
            now,
        };
        body(run, &mut ctx)
    }

    /// A step attempt's outcome (0 ok, 1 transient failure, 2 permanent failure); `false` when
    /// `token` names no attempt in flight (stale: ignored).
    pub fn complete(&mut self, run: u32, token: u32, outcome: u8, now: Millis) -> Result<bool, WorkflowError> {
        if outcome > PERMANENT {
            return Err(bad_outcome(outcome));
        }
        self.with_run(run, now, |run, ctx| Ok(run.complete(ctx, token, outcome)))
    }

    /// A decision: a branch's arm (-1 none), a loop's 1 go on / 0 stop, a map's or a pipeline's
    /// count; -2 says the decision itself failed. `false` when `token` asks nothing now.
    pub fn decide(&mut self, run: u32, token: u32, value: f64, now: Millis) -> Result<bool, WorkflowError> {
        if value.is_nan() {
            return Err(bad("decision", "is NaN"));
        }
        self.with_run(run, now, |run, ctx| run.decide(ctx, token, value))
    }

    /// A signal: taken by the earliest WAIT on `index`, or counted for the next one.
    pub fn signal(&mut self, run: u32, index: u32, now: Millis) -> Result<(), WorkflowError> {
        self.with_run(run, now, |run, ctx| {
            if index >= ctx.program.signals {
                let limit = ctx.program.signals.min(MAX_SIGNALS as u32);
                return Err(bad("signal", format!("index {index} is beyond the program's {limit} signals")));
            }
            if run.live() {
                run.signal(ctx, index);
            }
            Ok(())
        })
    }

    /// Cancels a run: its tree is cancelled and its completed steps compensated. Nothing on a
    /// finished or compensating run.
    pub fn cancel(&mut self, run: u32, now: Millis) -> Result<(), WorkflowError> {
        self.with_run(run, now, |run, ctx| {
            if run.live() {
                run.cancel(ctx);
            }
            Ok(())
        })
    }

    /// Fires an armed timer; `false` when it is not armed (fired or dropped already).
    pub fn fire(&mut self, run: u32, timer: u32, now: Millis) -> Result<bool, WorkflowError> {
        self.with_run(run, now, |run, ctx| {
            let Some(frame) = ctx.timers.disarm(ctx.id, timer) else {
                return Ok(false);
            };
            run.fire(ctx, timer, frame);
            Ok(true)
        })
    }

    /// `[run, timer, run, timer, ...]` of every timer due at `now`, earliest first (none at a
    /// NaN `now`); they stay armed until fired.
    #[must_use]
    pub fn due(&self, now: Millis) -> Vec<f64> {
        self.timers.due(now)
    }

    /// The earliest armed deadline, or `NO_DEADLINE`.
    #[must_use]
    pub fn next_deadline(&self) -> f64 {
        self.timers.next().unwrap_or(NO_DEADLINE)
    }

    /// Queues again the EXECUTE, COMPENSATE and DECIDE records of everything the run has with
    /// the host (after a replay: what to execute again).
    pub fn outstanding(&mut self, run: u32) -> Result<(), WorkflowError> {
        self.with_run(run, 0.0, |run, ctx| {
            run.outstanding(ctx);
            Ok(())
        })
    }

    /// The outbox, `RECORD_WORDS` numbers per record, in order; empties it.
    pub fn drain(&mut self) -> Vec<f64> {
        std::mem::take(&mut self.outbox)
    }

    /// Hands the outbox over as `out` (cleared first), keeping both allocations: the next
    /// records go into what `out` held.
    pub fn swap_outbox(&mut self, out: &mut Vec<f64>) {
        out.clear();
        std::mem::swap(&mut self.outbox, out);
    }

    /// Moves the outbox into `out` when it fits: `Ok(words written)`; else `Err(words needed)`
    /// and the outbox stays. Keeps the outbox's allocation, unlike [`Self::drain`].
    pub fn drain_into(&mut self, out: &mut [f64]) -> Result<usize, usize> {
        let len = self.outbox.len();
        let target = out.get_mut(..len).ok_or(len)?;
        target.copy_from_slice(&self.outbox);
        self.outbox.clear();
        Ok(len)
    }

    /// Forgets a run (finished, or abandoned: its timers are dropped, nothing more is recorded).
    pub fn release(&mut self, run: u32) -> Result<(), WorkflowError> {
        let state = self.runs.remove(run).ok_or(WorkflowError::UnknownRun(run))?;
        for timer in state.timers() {
            self.timers.disarm(run, timer);
        }
        for token in state.tokens() {
            self.inflight.remove(&(run, token));
        }
        for frame in state.pipelines(&self.programs[state.def as usize]) {
            self.pipes.remove(&(run, frame));
        }
        Ok(())
    }
}

#[cfg(test)]
mod checks {
    use super::{outcome, time, whole};

    #[test]
    fn numbers_from_js_are_refused_in_the_words_both_engines_show() {
        assert_eq!(whole(7.0, "run").ok(), Some(7));
        assert_eq!(whole(f64::from(u32::MAX), "run").ok(), Some(u32::MAX));
        for bad in [f64::NAN, -1.0, 1.5, 4_294_967_296.0, f64::INFINITY, f64::NEG_INFINITY, -0.5] {
            let message = whole(bad, "token").map_err(|e| e.to_string()).unwrap_err();
            assert_eq!(message, format!("token must be a whole number from 0 to 2^32 - 1, got {bad}"));
        }
        assert_eq!(outcome(2.0).ok(), Some(2));
        for bad in [3.0, 256.0, -1.0, 0.5, f64::NAN] {
            let message = outcome(bad).map_err(|e| e.to_string()).unwrap_err();
            assert_eq!(message, format!("outcome must be 0 (ok), 1 (transient) or 2 (permanent), got {bad}"));
        }
        assert_eq!(time(-5.0).ok(), Some(-5.0));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                time(bad).map_err(|e| e.to_string()).unwrap_err(),
                format!("now must be a finite time in ms, got {bad}")
            );
        }
    }
}
