//! The saga: when a run fails or is cancelled, the steps that completed and declared a
//! compensation are compensated one at a time, newest completion first. A compensation is a
//! STEP frame answering to the saga instead of a parent, so it retries and times out like any
//! step; one that finally fails is recorded and the rest still run.

use super::codes::{COMPENSATED, COMPENSATED_RUN, COMPENSATION_FAILED, COMPLETED, RUN_DONE, WHY_CANCELLED, WHY_NONE};
use super::program::NONE;
use super::run::{Cause, Ctx, Frame, Phase, Run, COMPENSATION};

/// Where a run's compensation stands.
#[derive(Debug, Clone, Default)]
pub struct Saga {
    /// Compensations are running: the run takes no more cancels, signals or steps.
    pub active: bool,
    /// A compensation finally failed.
    pub failed: bool,
    /// What failed the run (none for a cancel).
    pub cause: Option<Cause>,
}

impl Run {
    /// The run failed (`cause`) or was cancelled: compensate, or end at once with `end`.
    pub fn saga_begin(&mut self, ctx: &mut Ctx, end: u8, cause: Option<Cause>) {
        if self.completed.is_empty() {
            self.run_done(ctx, end, cause);
            return;
        }
        self.saga = Saga { active: true, failed: false, cause };
        self.saga_next(ctx);
    }

    /// Starts the compensation of the newest completion left, or ends the run.
    fn saga_next(&mut self, ctx: &mut Ctx) {
        let Some(done) = self.completed.pop() else {
            let status = if self.saga.failed { COMPENSATION_FAILED } else { COMPENSATED_RUN };
            self.run_done(ctx, status, self.saga.cause);
            return;
        };
        let f = self.alloc(Frame {
            node: ctx.program.nodes[done.node as usize].compensate,
            parent: COMPENSATION,
            index: 0,
            scope: done.scope,
            scope_index: 0,
            token: 0,
            timer: 0,
            timeout: 0,
            a: 0,
            b: done.node,
            c: done.token,
            d: 0,
            phase: Phase::Running,
        });
        self.attempt(ctx, f, 1);
    }

    /// A compensation of `step` ended with its last attempt `token`.
    pub fn compensation_done(&mut self, ctx: &mut Ctx, step: u32, scope: u32, token: u32, ok: bool) {
        ctx.emit(COMPENSATED, token, step, scope, f64::from(u8::from(!ok)), 0.0, 0.0);
        self.saga.failed |= !ok;
        self.saga_next(ctx);
    }

    /// `RUN_DONE`, once: `b` names the node where the failure began, `c` its token, the scope
    /// word why (a run that did not complete and has no cause was cancelled).
    pub fn run_done(&mut self, ctx: &mut Ctx, status: u8, cause: Option<Cause>) {
        self.status = status;
        self.saga.active = false;
        let (node, token) = cause.map_or((-1.0, 0.0), |c| (f64::from(c.node), f64::from(c.token)));
        let why = match cause {
            Some(cause) => cause.reason,
            None if status == COMPLETED => WHY_NONE,
            None => WHY_CANCELLED,
        };
        debug_assert!(cause.is_none_or(|c| c.node != NONE));
        ctx.emit(RUN_DONE, 0, 0, u32::from(why), f64::from(status), node, token);
        // A finished run keeps only its status until released.
        self.forget();
    }
}
