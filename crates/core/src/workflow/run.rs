//! One run: its live node instances ("frames") and how they move.
//!
//! A frame is one instance of a node (a loop body runs as a new frame per iteration, a map body
//! per instance, a pipeline stage per item). Starting a frame starts what it needs at once (recursively, so the depth is
//! bounded by the program's nesting) and returns whether it already finished; a finish that
//! comes later (a step's outcome, a decision, a timer) walks up through the parents in a loop.
//! Either way no call recurses over siblings, so a sequence of thousands of empty children
//! cannot overflow the stack.
//!
//! Joins are judged as children end, and first when the count is known: a PARALLEL of no
//! branches or a MAP decided N = 0 succeeds for `all` and fails for `any` and `quorum(n)`
//! (Promise.all and Promise.any agree), and a MAP decided fewer instances than its quorum fails
//! at once. A PIPELINE has no join of its own: every item must pass every stage, as `all`, so a
//! pipeline decided N = 0 succeeds with no items (an empty output).
//!
//! A failure carries a reason (`FAILURE_REASONS`) from where it began up to `RUN_DONE`, so the
//! host never guesses it from the node's kind.
//!
//! Frames live in one `Vec` per run, reused through a free list, and point at their parent by
//! index; tokens and timers find their frame through the maps in `Ctx`. A run idle on a signal
//! holds two 52-byte frames and nothing else.

use super::codes::{
    BRANCH, CANCEL, COMPENSATE, DECIDE, DONE_CANCELLED, DONE_FAILED, DONE_OK, DONE_SKIPPED, EXECUTE, JOIN_ALL,
    JOIN_ANY, LOOP, MAP, MAX_INSTANCES, NODE_DONE, OK, PARALLEL, PIPELINE, RECORD_WORDS, RETRY, RUNNING, SCOPE,
    SEQUENCE, SLEEP, STEP, TIMER, TRANSIENT, WAIT, WHY_ATTEMPT_TIMEOUT, WHY_CANCELLED, WHY_DECISION_FAILED,
    WHY_JOIN_UNREACHABLE, WHY_LOOP_LIMIT, WHY_NODE_TIMEOUT, WHY_RUN_TIMEOUT, WHY_STEP_FAILED, WHY_WAIT_TIMEOUT,
};
use super::program::{Node, Program, NONE};
use super::timers::Timers;
use crate::error::WorkflowError;
use crate::resilience::SplitMix64;
use crate::Millis;
use rustc_hash::FxHashMap;

/// A frame's parent word for a compensation attempt (it answers to the saga, not a node).
pub const COMPENSATION: u32 = u32::MAX - 1;

/// The frame word of the run's deadline timer (it belongs to the run, not to a frame).
pub const DEADLINE: u32 = u32::MAX - 2;

/// What a call needs besides the run: its program, the shared timers, the outbox, the run's
/// handle and the host's time.
pub struct Ctx<'a> {
    pub program: &'a Program,
    pub timers: &'a mut Timers,
    /// (run, token) -> frame of every attempt and decision with the host.
    pub inflight: &'a mut FxHashMap<(u32, u32), u32>,
    /// (run, frame) -> the stages of every running PIPELINE.
    pub pipes: &'a mut FxHashMap<(u32, u32), super::pipeline::Pipe>,
    pub out: &'a mut Vec<f64>,
    pub id: u32,
    pub now: Millis,
}

impl<'a> Ctx<'a> {
    /// Appends one record.
    #[allow(clippy::too_many_arguments, reason = "a record is eight words")]
    pub fn emit(&mut self, kind: u8, token: u32, node: u32, scope: u32, a: f64, b: f64, c: f64) {
        let words = [f64::from(kind), f64::from(self.id), f64::from(token), f64::from(node), f64::from(scope), a, b, c];
        debug_assert_eq!(words.len(), RECORD_WORDS);
        self.out.extend_from_slice(&words);
    }

    fn node(&self, node: u32) -> &'a Node {
        &self.program.nodes[node as usize]
    }
}

/// Where a failure began: the step attempt, decision or timer that caused it, and why
/// (`FAILURE_REASONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cause {
    pub node: u32,
    pub token: u32,
    pub reason: u8,
}

/// How a node instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Skipped,
    Failed(Cause),
}

/// What starting or advancing a frame came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Running,
    Done(Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Free,
    /// Children or a timer are running.
    Running,
    /// A step attempt is with the host (`token`).
    Attempt,
    /// A step waits for its retry timer.
    Backoff,
    /// A decision is with the host (`token`).
    Deciding,
    /// A WAIT waits for its signal.
    Waiting,
}

/// One live node instance.
#[derive(Debug, Clone)]
pub struct Frame {
    pub node: u32,
    /// The parent frame, [`NONE`] for the root, [`COMPENSATION`]; a free frame's next free one.
    pub parent: u32,
    /// Position under the parent: child position, iteration, instance or pipeline stage.
    pub index: u32,
    pub scope: u32,
    /// The index of the innermost iteration, instance or pipeline item (EXECUTE's `b`).
    pub scope_index: u32,
    /// The attempt or decision with the host; 0 when none.
    pub token: u32,
    /// STEP: the attempt-timeout or retry timer; SLEEP: its timer.
    pub timer: u32,
    /// A container's or WAIT's node timeout timer.
    pub timeout: u32,
    /// Per kind: STEP the attempt; SEQUENCE the running child; PARALLEL started; LOOP
    /// iterations done; MAP and PIPELINE N; WAIT its place in the queue of waiters.
    pub a: u32,
    /// PARALLEL/MAP successes; MAP started instances; compensation: the compensated step.
    pub b: u32,
    /// PARALLEL/MAP failures (MAP: `d`); compensation: the compensated step's token.
    pub c: u32,
    pub d: u32,
    pub phase: Phase,
}

/// A completed step that declared a compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    pub node: u32,
    pub scope: u32,
    pub token: u32,
}

/// One run's state.
#[derive(Debug, Clone)]
pub struct Run {
    pub def: u32,
    pub frames: Vec<Frame>,
    free: u32,
    next_token: u32,
    pub random: SplitMix64,
    /// [`RUNNING`] until `RUN_DONE`, then the final status.
    pub status: u8,
    /// Compensable completions, in completion order (the saga pops from the end).
    pub completed: Vec<Completed>,
    /// Signals that came while nothing waited: (index, count).
    signals: Vec<(u32, u32)>,
    wait_serial: u32,
    /// The run deadline's timer, 0 when none is armed.
    deadline: u32,
    pub saga: super::saga::Saga,
}

impl Run {
    /// A run of program `def`, not yet started.
    #[must_use]
    pub fn new(def: u32, seed: u64) -> Self {
        Self {
            def,
            frames: Vec::new(),
            free: NONE,
            next_token: 1,
            random: SplitMix64::new(seed),
            status: RUNNING,
            completed: Vec::new(),
            signals: Vec::new(),
            wait_serial: 0,
            deadline: 0,
            saga: super::saga::Saga::default(),
        }
    }

    /// The next token: attempts, decisions, timers and scopes share one counter, so replaying
    /// the same inputs hands out the same numbers.
    pub fn token(&mut self) -> u32 {
        let token = self.next_token;
        self.next_token = self.next_token.checked_add(1).unwrap_or(1);
        token
    }

    /// Whether inputs still move this run (not finished, not compensating).
    pub fn live(&self) -> bool {
        self.status == RUNNING && !self.saga.active
    }

    pub fn alloc(&mut self, frame: Frame) -> u32 {
        if self.free == NONE {
            self.frames.push(frame);
            (self.frames.len() - 1) as u32
        } else {
            let at = self.free;
            self.free = self.frames[at as usize].parent;
            self.frames[at as usize] = frame;
            at
        }
    }

    /// Takes back what frame `f` has with the host: its token is stale from now on.
    fn recall(&mut self, ctx: &mut Ctx, f: u32) {
        let token = std::mem::take(&mut self.frames[f as usize].token);
        if token != 0 {
            ctx.inflight.remove(&(ctx.id, token));
        }
    }

    /// Hands attempt or decision `token` of frame `f` to the host.
    fn hand_out(&mut self, ctx: &mut Ctx, f: u32, token: u32, phase: Phase) {
        let frame = &mut self.frames[f as usize];
        (frame.token, frame.phase) = (token, phase);
        ctx.inflight.insert((ctx.id, token), f);
    }

    /// The frame holding `token` in `phase`, if the host still has it.
    fn holder(&self, ctx: &Ctx, token: u32, phase: Phase) -> Option<u32> {
        let f = *ctx.inflight.get(&(ctx.id, token))?;
        let frame = self.frames.get(f as usize)?;
        (frame.token == token && frame.phase == phase).then_some(f)
    }

    /// Disarms a frame's timers, takes back its token, drops its pipe and frees it.
    pub fn release(&mut self, ctx: &mut Ctx, f: u32) {
        self.recall(ctx, f);
        if ctx.node(self.frames[f as usize].node).kind == PIPELINE {
            ctx.pipes.remove(&(ctx.id, f));
        }
        let frame = &mut self.frames[f as usize];
        for timer in [std::mem::take(&mut frame.timer), std::mem::take(&mut frame.timeout)] {
            if timer != 0 {
                ctx.timers.disarm(ctx.id, timer);
            }
        }
        frame.phase = Phase::Free;
        frame.parent = self.free;
        self.free = f;
    }

    /// Drops what a finished run no longer needs (its frames are all free by then).
    pub fn forget(&mut self) {
        debug_assert!(self.frames.iter().all(|f| f.phase == Phase::Free));
        self.frames = Vec::new();
        self.free = NONE;
        self.completed = Vec::new();
        self.signals = Vec::new();
    }

    /// Every timer this run has armed.
    pub fn timers(&self) -> impl Iterator<Item = u32> + '_ {
        let frames = self.frames.iter().filter(|f| f.phase != Phase::Free).flat_map(|f| [f.timer, f.timeout]);
        frames.chain([self.deadline]).filter(|&t| t != 0)
    }

    /// Every live frame of a PIPELINE node of `program` (each may hold a pipe).
    pub fn pipelines<'p>(&'p self, program: &'p Program) -> impl Iterator<Item = u32> + 'p {
        (0..self.frames.len() as u32).filter(|&f| {
            let frame = &self.frames[f as usize];
            frame.phase != Phase::Free && program.nodes[frame.node as usize].kind == PIPELINE
        })
    }

    /// Every attempt and decision token this run has with the host.
    pub fn tokens(&self) -> impl Iterator<Item = u32> + '_ {
        self.frames.iter().filter(|f| f.phase != Phase::Free && f.token != 0).map(|f| f.token)
    }

    /// Starts the root, and arms the run's `deadline` (host time; infinite for none) while it
    /// runs. The deadline is a timer of the run's own beside the root's timeout word, so the
    /// earlier of the two ends the run, and one program serves runs of any deadline.
    pub fn begin(&mut self, ctx: &mut Ctx, deadline: Millis) {
        // Most runs hold a container and one leaf at a time: room for two, not the four a first
        // push reserves, keeps a million idle runs 100 MB smaller.
        self.frames.reserve_exact(2);
        match self.start(ctx, 0, NONE, 0, 0, 0) {
            Step::Done(outcome) => self.root_done(ctx, outcome),
            Step::Running if deadline.is_finite() => {
                let timer = self.token();
                ctx.timers.arm(ctx.id, timer, deadline, DEADLINE);
                ctx.emit(TIMER, timer, 0, 0, deadline, 0.0, 0.0);
                self.deadline = timer;
            }
            Step::Running => {}
        }
    }

    /// Disarms the run's deadline: the root ended or the run was cancelled.
    fn drop_deadline(&mut self, ctx: &mut Ctx) {
        let timer = std::mem::take(&mut self.deadline);
        if timer != 0 {
            ctx.timers.disarm(ctx.id, timer);
        }
    }

    /// Arms a timer of frame `f` for `at` and records it.
    fn arm(&mut self, ctx: &mut Ctx, f: u32, at: Millis) -> u32 {
        let timer = self.token();
        ctx.timers.arm(ctx.id, timer, at, f);
        let frame = &self.frames[f as usize];
        ctx.emit(TIMER, timer, frame.node, frame.scope, at, 0.0, 0.0);
        timer
    }

    /// Starts an instance of `node` under frame `parent`.
    pub fn start(&mut self, ctx: &mut Ctx, node: u32, parent: u32, index: u32, scope: u32, scope_index: u32) -> Step {
        let f = self.alloc(Frame {
            node,
            parent,
            index,
            scope,
            scope_index,
            token: 0,
            timer: 0,
            timeout: 0,
            a: 0,
            b: 0,
            c: 0,
            d: 0,
            phase: Phase::Running,
        });
        let spec = ctx.node(node);
        let (kind, timeout) = (spec.kind, spec.timeout);
        let step = match kind {
            STEP => {
                self.attempt(ctx, f, 1);
                Step::Running
            }
            SEQUENCE => self.sequence_from(ctx, f, 0),
            PARALLEL => self.parallel_start(ctx, f),
            BRANCH | MAP | PIPELINE => {
                self.ask(ctx, f, 0);
                Step::Running
            }
            LOOP if spec.flag == 0 => {
                self.ask(ctx, f, 0);
                Step::Running
            }
            LOOP => self.iterate(ctx, f),
            SLEEP => {
                let ms = spec.ms;
                self.frames[f as usize].timer = self.arm(ctx, f, ctx.now + ms);
                Step::Running
            }
            _ => self.wait_start(ctx, f),
        };
        match step {
            Step::Running => {
                if kind != STEP && timeout.is_finite() {
                    self.frames[f as usize].timeout = self.arm(ctx, f, ctx.now + timeout);
                }
            }
            Step::Done(outcome) => {
                self.node_done(ctx, f, outcome);
                self.release(ctx, f);
            }
        }
        step
    }

    /// Sends attempt `n` of a STEP frame (a step or a compensation) to the host.
    pub fn attempt(&mut self, ctx: &mut Ctx, f: u32, n: u32) {
        let token = self.token();
        self.frames[f as usize].a = n;
        self.hand_out(ctx, f, token, Phase::Attempt);
        self.send_attempt(ctx, f);
        let timeout = ctx.node(self.frames[f as usize].node).timeout;
        if timeout.is_finite() {
            self.frames[f as usize].timer = self.arm(ctx, f, ctx.now + timeout);
        }
    }

    /// The EXECUTE or COMPENSATE record of the attempt in flight.
    fn send_attempt(&self, ctx: &mut Ctx, f: u32) {
        let frame = &self.frames[f as usize];
        if frame.parent == COMPENSATION {
            let (step, token) = (f64::from(frame.b), f64::from(frame.c));
            ctx.emit(COMPENSATE, frame.token, frame.node, frame.scope, f64::from(frame.a), step, token);
        } else {
            let instance = f64::from(frame.scope_index);
            ctx.emit(EXECUTE, frame.token, frame.node, frame.scope, f64::from(frame.a), instance, 0.0);
        }
    }

    /// Asks the host for a decision.
    fn ask(&mut self, ctx: &mut Ctx, f: u32, word: u32) {
        let token = self.token();
        self.hand_out(ctx, f, token, Phase::Deciding);
        let frame = &self.frames[f as usize];
        ctx.emit(DECIDE, token, frame.node, frame.scope, f64::from(word), 0.0, 0.0);
    }

    /// A DECIDE's `a`: the iteration a LOOP asks about (before it: while; after it: until).
    fn decide_word(ctx: &Ctx, frame: &Frame) -> u32 {
        let node = ctx.node(frame.node);
        match (node.kind, node.flag) {
            (LOOP, 0) => frame.a,
            (LOOP, _) => frame.a.saturating_sub(1),
            _ => 0,
        }
    }

    /// Re-queues the records of everything with the host, in token order.
    pub fn outstanding(&self, ctx: &mut Ctx) {
        let mut pending: Vec<(u32, u32)> = (0..self.frames.len() as u32)
            .filter(|&f| matches!(self.frames[f as usize].phase, Phase::Attempt | Phase::Deciding))
            .map(|f| (self.frames[f as usize].token, f))
            .collect();
        pending.sort_unstable();
        for (token, f) in pending {
            let frame = &self.frames[f as usize];
            if frame.phase == Phase::Attempt {
                self.send_attempt(ctx, f);
            } else {
                ctx.emit(DECIDE, token, frame.node, frame.scope, f64::from(Self::decide_word(ctx, frame)), 0.0, 0.0);
            }
        }
    }

    fn node_done(&self, ctx: &mut Ctx, f: u32, outcome: Outcome) {
        let frame = &self.frames[f as usize];
        let (code, token, reason) = match outcome {
            Outcome::Ok => (DONE_OK, 0, 0),
            Outcome::Skipped => (DONE_SKIPPED, 0, 0),
            Outcome::Failed(cause) => (DONE_FAILED, cause.token, cause.reason),
        };
        ctx.emit(NODE_DONE, 0, frame.node, frame.scope, f64::from(code), f64::from(token), f64::from(reason));
    }

    /// Ends frame `f` and walks up: each parent reacts, until one keeps running or the root ends.
    pub fn finish(&mut self, ctx: &mut Ctx, mut f: u32, mut outcome: Outcome) {
        loop {
            let Frame { parent, index, .. } = self.frames[f as usize];
            if parent == COMPENSATION {
                let Frame { b: step, scope, token, .. } = self.frames[f as usize];
                self.release(ctx, f);
                self.compensation_done(ctx, step, scope, token, outcome == Outcome::Ok);
                return;
            }
            self.node_done(ctx, f, outcome);
            self.release(ctx, f);
            if parent == NONE {
                self.root_done(ctx, outcome);
                return;
            }
            match self.child_done(ctx, parent, index, outcome) {
                Step::Running => return,
                Step::Done(next) => (f, outcome) = (parent, next),
            }
        }
    }

    /// A parent's reaction to child `index` ending.
    fn child_done(&mut self, ctx: &mut Ctx, p: u32, index: u32, outcome: Outcome) -> Step {
        let node = ctx.node(self.frames[p as usize].node);
        match node.kind {
            SEQUENCE => match outcome {
                Outcome::Failed(_) => Step::Done(outcome),
                _ => self.sequence_from(ctx, p, index + 1),
            },
            PARALLEL => self.tally(ctx, p, outcome).map_or(Step::Running, Step::Done),
            BRANCH => Step::Done(if outcome == Outcome::Skipped { Outcome::Ok } else { outcome }),
            LOOP => {
                if let Outcome::Failed(_) = outcome {
                    return Step::Done(outcome);
                }
                let frame = &mut self.frames[p as usize];
                frame.a += 1;
                let word = Self::decide_word(ctx, frame);
                self.ask(ctx, p, word);
                Step::Running
            }
            MAP => match self.tally(ctx, p, outcome) {
                Some(done) => Step::Done(done),
                None => self.map_fill(ctx, p),
            },
            PIPELINE => self.pipeline_stage_done(ctx, p, index, outcome),
            _ => Step::Running,
        }
    }

    /// Starts children of a SEQUENCE from position `pos` until one keeps running.
    fn sequence_from(&mut self, ctx: &mut Ctx, f: u32, mut pos: u32) -> Step {
        let (node, scope, scope_index) = {
            let frame = &self.frames[f as usize];
            (frame.node, frame.scope, frame.scope_index)
        };
        loop {
            let spec = ctx.node(node);
            if pos >= spec.child_count {
                return Step::Done(Outcome::Ok);
            }
            let child = ctx.program.child(spec, pos);
            self.frames[f as usize].a = pos;
            match self.start(ctx, child, f, pos, scope, scope_index) {
                Step::Running => return Step::Running,
                Step::Done(failed @ Outcome::Failed(_)) => return Step::Done(failed),
                Step::Done(_) => pos += 1,
            }
        }
    }

    fn parallel_start(&mut self, ctx: &mut Ctx, f: u32) -> Step {
        let Frame { node, scope, scope_index, .. } = self.frames[f as usize];
        let spec = ctx.node(node);
        let count = spec.child_count;
        if count == 0 {
            // No branches: the join decides, as for a MAP decided N = 0 (`any` fails).
            return Step::Done(empty_join(
                spec.join,
                spec.quorum,
                Cause { node, token: 0, reason: WHY_JOIN_UNREACHABLE },
            ));
        }
        for i in 0..count {
            let child = ctx.program.child(ctx.node(node), i);
            self.frames[f as usize].a = i + 1;
            if let Step::Done(outcome) = self.start(ctx, child, f, i, scope, scope_index) {
                if let Some(done) = self.tally(ctx, f, outcome) {
                    return Step::Done(done);
                }
            }
        }
        Step::Running
    }

    /// Counts a PARALLEL or MAP child's end; once the join is decided, cancels the children
    /// still running and says how the node ends.
    fn tally(&mut self, ctx: &mut Ctx, f: u32, outcome: Outcome) -> Option<Outcome> {
        let frame = &mut self.frames[f as usize];
        let node = ctx.node(frame.node);
        let (total, ok, failed) = if node.kind == MAP {
            match outcome {
                Outcome::Failed(_) => frame.d += 1,
                _ => frame.c += 1,
            }
            (frame.a, frame.c, frame.d)
        } else {
            match outcome {
                Outcome::Failed(_) => frame.c += 1,
                _ => frame.b += 1,
            }
            (node.child_count, frame.b, frame.c)
        };
        let verdict = joined(node.join, node.quorum, total, ok, failed)?;
        let join = frame.node;
        self.cancel_children(ctx, f);
        Some(match outcome {
            _ if verdict => Outcome::Ok,
            // `all` fails where its child failed; `any` and `quorum` because too few are left:
            // the join node itself, with the last failure's token.
            Outcome::Failed(cause) if node.join != JOIN_ALL => {
                Outcome::Failed(Cause { node: join, token: cause.token, reason: WHY_JOIN_UNREACHABLE })
            }
            other => other,
        })
    }

    /// Runs the next LOOP iteration: a new scope, then the body.
    fn iterate(&mut self, ctx: &mut Ctx, f: u32) -> Step {
        let scope = self.token();
        self.recall(ctx, f);
        let frame = &mut self.frames[f as usize];
        frame.phase = Phase::Running;
        let Frame { node, scope: parent_scope, a: iteration, .. } = *frame;
        ctx.emit(SCOPE, scope, node, parent_scope, f64::from(iteration), 0.0, 0.0);
        let body = ctx.program.child(ctx.node(node), 0);
        match self.start(ctx, body, f, iteration, scope, iteration) {
            Step::Running => Step::Running,
            Step::Done(outcome) => self.child_done(ctx, f, iteration, outcome),
        }
    }

    /// Starts MAP instances up to its concurrency, until one keeps running or the join is decided.
    fn map_fill(&mut self, ctx: &mut Ctx, f: u32) -> Step {
        loop {
            let Frame { node, scope: parent_scope, a: total, b: started, c: ok, d: failed, .. } =
                self.frames[f as usize];
            let spec = ctx.node(node);
            let running = started - ok - failed;
            if started >= total || (spec.limit != 0 && running >= spec.limit) {
                return Step::Running;
            }
            self.frames[f as usize].b += 1;
            let scope = self.token();
            ctx.emit(SCOPE, scope, node, parent_scope, f64::from(started), 0.0, 0.0);
            let body = ctx.program.child(spec, 0);
            if let Step::Done(outcome) = self.start(ctx, body, f, started, scope, started) {
                if let Some(done) = self.tally(ctx, f, outcome) {
                    return Step::Done(done);
                }
            }
        }
    }

    fn wait_start(&mut self, ctx: &mut Ctx, f: u32) -> Step {
        let index = ctx.node(self.frames[f as usize].node).signal;
        if let Some(at) = self.signals.iter().position(|&(i, _)| i == index) {
            self.signals[at].1 -= 1;
            if self.signals[at].1 == 0 {
                self.signals.swap_remove(at);
            }
            return Step::Done(Outcome::Ok);
        }
        let serial = self.wait_serial;
        self.wait_serial = self.wait_serial.wrapping_add(1);
        let frame = &mut self.frames[f as usize];
        (frame.phase, frame.a) = (Phase::Waiting, serial);
        Step::Running
    }

    /// Cancels every running child of `f` and what runs under them, in child order.
    pub fn cancel_children(&mut self, ctx: &mut Ctx, f: u32) {
        // One pass over the frames, sorted by (parent, position): every frame below finds its
        // children by binary search, so cancelling a map of many instances stays O(n log n).
        let mut below: Vec<(u32, u32, u32)> = (0..self.frames.len() as u32)
            .filter(|&c| self.frames[c as usize].phase != Phase::Free)
            .map(|c| (self.frames[c as usize].parent, self.frames[c as usize].index, c))
            .collect();
        below.sort_unstable();
        self.cancel_under(ctx, f, &below);
    }

    fn cancel_under(&mut self, ctx: &mut Ctx, f: u32, below: &[(u32, u32, u32)]) {
        let first = below.partition_point(|&(parent, _, _)| parent < f);
        for &(_, _, child) in below[first..].iter().take_while(|&&(parent, _, _)| parent == f) {
            self.cancel_under(ctx, child, below);
            self.cancel_one(ctx, child);
        }
    }

    /// Cancels frame `f` and everything under it.
    pub fn cancel_frame(&mut self, ctx: &mut Ctx, f: u32) {
        self.cancel_children(ctx, f);
        self.cancel_one(ctx, f);
    }

    /// Cancels frame `f` alone: an attempt in flight gets a CANCEL, timers are dropped, its
    /// `NODE_DONE` says cancelled.
    fn cancel_one(&mut self, ctx: &mut Ctx, f: u32) {
        let frame = &self.frames[f as usize];
        if frame.phase == Phase::Attempt {
            ctx.emit(CANCEL, frame.token, frame.node, frame.scope, f64::from(frame.a), 0.0, 0.0);
        }
        let why = f64::from(WHY_CANCELLED);
        ctx.emit(NODE_DONE, 0, frame.node, frame.scope, f64::from(DONE_CANCELLED), 0.0, why);
        self.release(ctx, f);
    }

    /// A step attempt's outcome from the host; `false` when `token` is no attempt in flight.
    pub fn complete(&mut self, ctx: &mut Ctx, token: u32, outcome: u8) -> bool {
        let Some(f) = self.holder(ctx, token, Phase::Attempt) else {
            return false;
        };
        let timer = std::mem::take(&mut self.frames[f as usize].timer);
        if timer != 0 {
            ctx.timers.disarm(ctx.id, timer);
        }
        if outcome == OK {
            let frame = &self.frames[f as usize];
            if frame.parent != COMPENSATION && ctx.node(frame.node).compensate != NONE {
                self.completed.push(Completed { node: frame.node, scope: frame.scope, token });
            }
            self.finish(ctx, f, Outcome::Ok);
        } else {
            self.attempt_failed(ctx, f, outcome == TRANSIENT, WHY_STEP_FAILED);
        }
        true
    }

    /// A failed attempt (`why`: it failed, or timed out): a retry timer while attempts are
    /// left and the failure is transient, else the step fails.
    fn attempt_failed(&mut self, ctx: &mut Ctx, f: u32, transient: bool, why: u8) {
        let Frame { node, scope, token, a: attempt, .. } = self.frames[f as usize];
        let spec = ctx.node(node);
        if !transient || attempt >= spec.attempts {
            self.finish(ctx, f, Outcome::Failed(Cause { node, token, reason: why }));
            return;
        }
        let delay = spec.backoff.delay(attempt, &mut self.random);
        let at = ctx.now + delay;
        ctx.emit(RETRY, token, node, scope, f64::from(attempt + 1), at, 0.0);
        self.recall(ctx, f);
        self.frames[f as usize].phase = Phase::Backoff;
        self.frames[f as usize].timer = self.arm(ctx, f, at);
    }

    /// A decision from the host; `Ok(false)` when `token` asks nothing now.
    pub fn decide(&mut self, ctx: &mut Ctx, token: u32, value: f64) -> Result<bool, WorkflowError> {
        let Some(f) = self.holder(ctx, token, Phase::Deciding) else {
            return Ok(false);
        };
        let node = ctx.node(self.frames[f as usize].node);
        let cause = Cause { node: self.frames[f as usize].node, token, reason: WHY_DECISION_FAILED };
        let failed = |reason| Outcome::Failed(Cause { reason, ..cause });
        let bad = |reason: String| Err(WorkflowError::InvalidArgument { argument: "decision", reason });
        let whole = value.fract() == 0.0 && value >= 0.0;
        let step = if value == -2.0 {
            Step::Done(failed(WHY_DECISION_FAILED))
        } else {
            match node.kind {
                BRANCH if value == -1.0 => Step::Done(Outcome::Skipped),
                BRANCH if whole && value < f64::from(node.child_count) => {
                    let arm = ctx.program.child(node, value as u32);
                    let Frame { scope, scope_index, .. } = self.frames[f as usize];
                    self.recall(ctx, f);
                    self.frames[f as usize].phase = Phase::Running;
                    match self.start(ctx, arm, f, value as u32, scope, scope_index) {
                        Step::Done(outcome) => self.child_done(ctx, f, value as u32, outcome),
                        running @ Step::Running => running,
                    }
                }
                BRANCH => return bad(format!("{value} is no arm of a branch of {}, nor -1 or -2", node.child_count)),
                LOOP if value == 0.0 => Step::Done(Outcome::Ok),
                LOOP if value == 1.0 && self.frames[f as usize].a >= node.limit => Step::Done(failed(WHY_LOOP_LIMIT)),
                LOOP if value == 1.0 => self.iterate(ctx, f),
                LOOP => return bad(format!("{value} is not 1 (go on), 0 (stop) or -2 (failed)")),
                PIPELINE if whole && value <= MAX_INSTANCES as f64 => {
                    self.recall(ctx, f);
                    self.frames[f as usize].phase = Phase::Running;
                    self.pipeline_begin(ctx, f, value as u32)
                }
                _ if whole && value <= MAX_INSTANCES as f64 => {
                    self.recall(ctx, f);
                    let frame = &mut self.frames[f as usize];
                    (frame.phase, frame.a) = (Phase::Running, value as u32);
                    // The join is judged before any instance runs: N = 0 is `all` ok, `any`
                    // failed; fewer instances than a quorum fail at once.
                    match joined(node.join, node.quorum, value as u32, 0, 0) {
                        Some(true) => Step::Done(Outcome::Ok),
                        Some(false) => Step::Done(failed(WHY_JOIN_UNREACHABLE)),
                        None => self.map_fill(ctx, f),
                    }
                }
                _ => return bad(format!("{value} is not a count in 0..={MAX_INSTANCES}, nor -2")),
            }
        };
        if let Step::Done(outcome) = step {
            self.finish(ctx, f, outcome);
        }
        Ok(true)
    }

    /// A signal: the earliest waiter on `index` takes it, else it is counted for the next.
    pub fn signal(&mut self, ctx: &mut Ctx, index: u32) {
        let waiter = (0..self.frames.len() as u32)
            .filter(|&f| {
                let frame = &self.frames[f as usize];
                frame.phase == Phase::Waiting && ctx.node(frame.node).signal == index
            })
            .min_by_key(|&f| self.frames[f as usize].a.wrapping_sub(self.wait_serial));
        match waiter {
            Some(f) => self.finish(ctx, f, Outcome::Ok),
            None => match self.signals.iter_mut().find(|(i, _)| *i == index) {
                Some((_, count)) => *count = count.saturating_add(1),
                None => self.signals.push((index, 1)),
            },
        }
    }

    /// Fires timer `timer` of frame `f` (the caller disarmed it).
    pub fn fire(&mut self, ctx: &mut Ctx, timer: u32, f: u32) {
        if f == DEADLINE {
            self.deadline = 0;
            let root = self.frames.iter().position(|fr| fr.phase != Phase::Free && fr.parent == NONE);
            if let Some(root) = root {
                self.time_out(ctx, root as u32, Cause { node: 0, token: timer, reason: WHY_RUN_TIMEOUT });
            }
            return;
        }
        let Some(&Frame { timer: own, timeout, node, .. }) =
            self.frames.get(f as usize).filter(|fr| fr.phase != Phase::Free)
        else {
            return;
        };
        if own == timer {
            self.frames[f as usize].timer = 0;
            let frame = &self.frames[f as usize];
            match (ctx.node(frame.node).kind, frame.phase) {
                (STEP, Phase::Attempt) => {
                    // A step timeout: the host aborts the attempt, which counts as a transient failure.
                    ctx.emit(CANCEL, frame.token, frame.node, frame.scope, f64::from(frame.a), 0.0, 0.0);
                    self.attempt_failed(ctx, f, true, WHY_ATTEMPT_TIMEOUT);
                }
                (STEP, _) => {
                    let next = frame.a + 1;
                    self.attempt(ctx, f, next);
                }
                _ => self.finish(ctx, f, Outcome::Ok),
            }
        } else if timeout == timer {
            self.frames[f as usize].timeout = 0;
            let spec = ctx.node(node);
            let reason = match spec.kind {
                WAIT if spec.flag == 1 => {
                    self.finish(ctx, f, Outcome::Skipped);
                    return;
                }
                WAIT => WHY_WAIT_TIMEOUT,
                // The root's timeout word is the run's timeout.
                _ if self.frames[f as usize].parent == NONE => WHY_RUN_TIMEOUT,
                _ => WHY_NODE_TIMEOUT,
            };
            self.time_out(ctx, f, Cause { node, token: timer, reason });
        }
    }

    /// Fails frame `f` for a timeout: what runs under it is cancelled (an attempt of its own
    /// too: a root STEP under the run's deadline).
    fn time_out(&mut self, ctx: &mut Ctx, f: u32, cause: Cause) {
        let frame = &self.frames[f as usize];
        if frame.phase == Phase::Attempt {
            ctx.emit(CANCEL, frame.token, frame.node, frame.scope, f64::from(frame.a), 0.0, 0.0);
        }
        self.cancel_children(ctx, f);
        self.finish(ctx, f, Outcome::Failed(cause));
    }

    /// The run's cancel: the tree is cancelled, then compensated.
    pub fn cancel(&mut self, ctx: &mut Ctx) {
        self.drop_deadline(ctx);
        if let Some(root) = self.frames.iter().position(|fr| fr.phase != Phase::Free && fr.parent == NONE) {
            self.cancel_frame(ctx, root as u32);
        }
        self.saga_begin(ctx, super::codes::CANCELLED, None);
    }

    fn root_done(&mut self, ctx: &mut Ctx, outcome: Outcome) {
        self.drop_deadline(ctx);
        match outcome {
            Outcome::Failed(cause) => self.saga_begin(ctx, super::codes::FAILED, Some(cause)),
            _ => self.run_done(ctx, super::codes::COMPLETED, None),
        }
    }
}

/// How a PARALLEL of no branches, or a MAP decided N = 0, ends: as its join says with nothing
/// to wait for (`all` succeeds; `any` and `quorum(n)`, n >= 1, fail with `unreachable`).
fn empty_join(join: u8, quorum: u32, unreachable: Cause) -> Outcome {
    if joined(join, quorum, 0, 0, 0) == Some(false) {
        Outcome::Failed(unreachable)
    } else {
        Outcome::Ok
    }
}

/// A join's verdict over `total` children with `ok` successes and `failed` failures:
/// `Some(true)` succeeded, `Some(false)` failed, `None` undecided.
#[must_use]
pub fn joined(join: u8, quorum: u32, total: u32, ok: u32, failed: u32) -> Option<bool> {
    let need = match join {
        JOIN_ALL => total,
        JOIN_ANY => 1,
        _ => quorum,
    };
    if ok >= need {
        Some(true)
    } else if total.saturating_sub(failed) < need {
        Some(false)
    } else {
        None
    }
}
