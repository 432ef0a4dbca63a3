//! PIPELINE: N items (N decided by the host) pass through the stages (the node's children) in
//! order. Stage s takes items one at a time in index order; it starts item i once stage s - 1
//! finished item i, and only while the items it finished that stage s + 1 has not started stay
//! within the buffer (backpressure). Each (stage, item) runs in a scope of its own: a SCOPE
//! record with `a` = the item, `b` = the stage, and the stage's EXECUTEs carry the item as `b`.
//! A stage that fails fails the pipeline, the other stages cancelled; N = 0 succeeds at once.
//!
//! Whether a stage may start changes only where something happened: when stage s finishes an
//! item, stage s + 1 (the item is ready for it) and s itself (its next item) may go; when stage
//! s starts an item, stage s - 1 may (room in the buffer). So an answer tries a few stages and
//! never looks at every item or stage. The stages to try are a stack without duplicates (so it
//! holds at most one entry a stage, even when stages finish as they start): the stage an item
//! goes on to is tried before the stage it left, and the stages upstream follow, nearest first.

use super::codes::SCOPE;
use super::run::{Ctx, Frame, Outcome, Run, Step};

/// Where one stage stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Lane {
    /// Items this stage has started; the next item it takes has this index.
    started: u32,
    /// Item `started - 1` is in this stage now.
    running: bool,
    /// On the stack of stages to try.
    queued: bool,
}

impl Lane {
    /// Items this stage has finished.
    fn done(self) -> u32 {
        self.started - u32::from(self.running)
    }
}

/// A running pipeline: where each of its stages stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipe {
    lanes: Box<[Lane]>,
}

impl Pipe {
    /// Puts stage `s` on the stack `todo` unless it is there already.
    fn queue(&mut self, todo: &mut Vec<u32>, s: u32) {
        let lane = &mut self.lanes[s as usize];
        if !lane.queued {
            lane.queued = true;
            todo.push(s);
        }
    }
}

impl Run {
    /// The host decided `items` for pipeline frame `f`: stage 0 takes the first item, or the
    /// pipeline succeeds at once when there is none.
    pub fn pipeline_begin(&mut self, ctx: &mut Ctx, f: u32, items: u32) -> Step {
        self.frames[f as usize].a = items;
        if items == 0 {
            return Step::Done(Outcome::Ok);
        }
        let stages = ctx.program.nodes[self.frames[f as usize].node as usize].child_count;
        let mut pipe = Pipe { lanes: vec![Lane::default(); stages as usize].into_boxed_slice() };
        let mut todo = Vec::new();
        pipe.queue(&mut todo, 0);
        ctx.pipes.insert((ctx.id, f), pipe);
        self.pipeline_pump(ctx, f, todo)
    }

    /// Stage `stage` of pipeline frame `f` ended its item (a host's answer came up to it).
    pub fn pipeline_stage_done(&mut self, ctx: &mut Ctx, f: u32, stage: u32, outcome: Outcome) -> Step {
        let mut todo = Vec::new();
        match self.pipeline_stage_ended(ctx, f, stage, outcome, &mut todo) {
            Some(done) => Step::Done(done),
            None => self.pipeline_pump(ctx, f, todo),
        }
    }

    /// Notes that `stage` ended its item: a failure fails the pipeline (the other stages
    /// cancelled), the last stage's last item ends it; otherwise the stage after and this one
    /// are queued to try.
    fn pipeline_stage_ended(
        &mut self,
        ctx: &mut Ctx,
        f: u32,
        stage: u32,
        outcome: Outcome,
        todo: &mut Vec<u32>,
    ) -> Option<Outcome> {
        if let Outcome::Failed(_) = outcome {
            self.cancel_children(ctx, f);
            return Some(outcome);
        }
        let items = self.frames[f as usize].a;
        // The pipe lives exactly as long as its frame; its absence would be a bug, so the
        // pipeline then ends rather than hanging.
        let Some(pipe) = ctx.pipes.get_mut(&(ctx.id, f)) else {
            debug_assert!(false, "a running pipeline without its pipe");
            return Some(outcome);
        };
        let last = pipe.lanes.len() as u32 - 1;
        let lane = &mut pipe.lanes[stage as usize];
        lane.running = false;
        if stage == last && lane.started == items {
            // The last stage took the items in order, so every item went through every stage.
            return Some(Outcome::Ok);
        }
        pipe.queue(todo, stage);
        if stage < last {
            pipe.queue(todo, stage + 1);
        }
        None
    }

    /// Starts every stage on `todo` that may start, and what that frees in turn, until none
    /// may; `Done` when a stage failed or the last item left the last stage.
    fn pipeline_pump(&mut self, ctx: &mut Ctx, f: u32, mut todo: Vec<u32>) -> Step {
        let Frame { node, scope: parent_scope, a: items, .. } = self.frames[f as usize];
        let spec = &ctx.program.nodes[node as usize];
        let buffer = u64::from(spec.limit);
        while let Some(s) = todo.pop() {
            let Some(pipe) = ctx.pipes.get_mut(&(ctx.id, f)) else {
                debug_assert!(false, "a running pipeline without its pipe");
                return Step::Done(Outcome::Ok);
            };
            let at = s as usize;
            pipe.lanes[at].queued = false;
            let Lane { started: item, running, .. } = pipe.lanes[at];
            let ready = !running
                && item < items
                && (at == 0 || pipe.lanes[at - 1].done() > item)
                && pipe.lanes.get(at + 1).is_none_or(|next| u64::from(item) < u64::from(next.started) + buffer);
            if !ready {
                continue;
            }
            pipe.lanes[at] = Lane { started: item + 1, running: true, queued: false };
            if s > 0 {
                // Taking an item makes room in the buffer behind this stage.
                pipe.queue(&mut todo, s - 1);
            }
            let scope = self.token();
            ctx.emit(SCOPE, scope, node, parent_scope, f64::from(item), f64::from(s), 0.0);
            let stage = ctx.program.child(spec, s);
            if let Step::Done(outcome) = self.start(ctx, stage, f, s, scope, item) {
                if let Some(done) = self.pipeline_stage_ended(ctx, f, s, outcome, &mut todo) {
                    return Step::Done(done);
                }
            }
        }
        Step::Running
    }
}
