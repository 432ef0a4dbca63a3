//! Workflow runs as a state machine: the core decides which node of a run goes next (retries,
//! timers, joins, loops, sagas); the host executes steps, evaluates conditions and keeps data.
//!
//! The host hands in a *program* (a workflow definition compiled to numbers, [`program`]) and
//! drives each run with inputs that carry its own `now`: step outcomes, decisions, signals,
//! cancels and timer fires. The core answers with fixed-size *records* in an outbox (what to
//! execute, decide, cancel, which timers to arm, what finished). It holds no clock and no
//! randomness of its own (jitter comes from a per-run seed), so replaying a run's recorded
//! inputs into a fresh [`Workflows`] yields the same records and the same state: that is how a
//! run resumes after a crash.
//!
//! Modules: [`program`] decodes and validates a program; `run` holds one run's node instances
//! and moves them; `pipeline` moves items through a PIPELINE's stages; `saga` runs
//! compensations when a run fails or is cancelled; `timers` is the deadline index shared by all
//! runs; [`wire`] holds the calls both bindings make.
//!
//! Lookups by token (a step's outcome, a decision, a timer) go through maps shared by all runs,
//! holding only what is with the host, so a map of 100,000 instances answers each in O(1) and a
//! run idle on a signal costs nothing there. A running pipeline's stage counters live in such a
//! map too (by run and frame), so a frame stays small.

mod pipeline;
pub mod program;
mod run;
mod saga;
mod timers;
pub mod wire;

#[cfg(test)]
mod pipeline_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use crate::error::WorkflowError;
use rustc_hash::FxHashMap;

use crate::slab::Slab;
use program::Program;
use run::Run;
use timers::Timers;

/// The numbers the host and the core agree on (rendered into `ts/engines/manifest.ts`).
pub mod codes {
    /// The program format this core reads.
    pub const PROGRAM_FORMAT: u32 = 1;
    /// Words per node in a program.
    pub const NODE_WORDS: usize = 12;
    /// Words per record in the outbox.
    pub const RECORD_WORDS: usize = 8;

    /// Node kinds, as a program's word 0 of a node names them.
    pub const NODES: &[(&str, u8)] = &[
        ("step", STEP),
        ("sequence", SEQUENCE),
        ("parallel", PARALLEL),
        ("branch", BRANCH),
        ("loop", LOOP),
        ("map", MAP),
        ("sleep", SLEEP),
        ("wait", WAIT),
        ("pipeline", PIPELINE),
    ];
    /// A leaf the host executes.
    pub const STEP: u8 = 0;
    /// Children one after another.
    pub const SEQUENCE: u8 = 1;
    /// Children at once, joined by a policy.
    pub const PARALLEL: u8 = 2;
    /// One arm, decided by the host.
    pub const BRANCH: u8 = 3;
    /// A body repeated while the host decides to go on.
    pub const LOOP: u8 = 4;
    /// A body run N times (N decided by the host), joined by a policy.
    pub const MAP: u8 = 5;
    /// A durable timer.
    pub const SLEEP: u8 = 6;
    /// A wait for a signal.
    pub const WAIT: u8 = 7;
    /// Stages (the children) that N items (decided by the host) pass through in order, each
    /// stage one item at a time, at most `buffer` items ahead of the next stage.
    pub const PIPELINE: u8 = 8;

    /// Record kinds, as word 0 of a record names them.
    pub const RECORDS: &[(&str, u8)] = &[
        ("execute", EXECUTE),
        ("compensate", COMPENSATE),
        ("decide", DECIDE),
        ("cancel", CANCEL),
        ("scope", SCOPE),
        ("node-done", NODE_DONE),
        ("retry", RETRY),
        ("timer", TIMER),
        ("run-done", RUN_DONE),
        ("compensated", COMPENSATED),
    ];
    /// Execute a step attempt.
    pub const EXECUTE: u8 = 1;
    /// Execute a compensation attempt.
    pub const COMPENSATE: u8 = 2;
    /// Decide a branch arm, a loop's going on, or a map's count.
    pub const DECIDE: u8 = 3;
    /// Abort an attempt in flight: its result will be stale.
    pub const CANCEL: u8 = 4;
    /// A new scope: a loop iteration, a map instance, or one item in one pipeline stage.
    pub const SCOPE: u8 = 5;
    /// A node instance finished: `a` its outcome, `b` the token where a failure began, `c` why
    /// (`FAILURE_REASONS`).
    pub const NODE_DONE: u8 = 6;
    /// A failed attempt will be retried.
    pub const RETRY: u8 = 7;
    /// A timer was armed.
    pub const TIMER: u8 = 8;
    /// The run finished: `a` its status, `b` the node and `c` the token where a failure began,
    /// the scope word why (`FAILURE_REASONS`).
    pub const RUN_DONE: u8 = 9;
    /// A compensation finished.
    pub const COMPENSATED: u8 = 10;

    /// Run statuses, as a `RUN_DONE` record's `a` names them.
    pub const RUN_STATUSES: &[(&str, u8)] = &[
        ("running", RUNNING),
        ("completed", COMPLETED),
        ("failed", FAILED),
        ("cancelled", CANCELLED),
        ("compensated", COMPENSATED_RUN),
        ("compensation-failed", COMPENSATION_FAILED),
    ];
    /// Not finished.
    pub const RUNNING: u8 = 0;
    /// The root succeeded.
    pub const COMPLETED: u8 = 1;
    /// The root failed and nothing was compensated.
    pub const FAILED: u8 = 2;
    /// Cancelled, and nothing was compensated.
    pub const CANCELLED: u8 = 3;
    /// Failed or cancelled, and every compensation succeeded.
    pub const COMPENSATED_RUN: u8 = 4;
    /// Failed or cancelled, and a compensation failed.
    pub const COMPENSATION_FAILED: u8 = 5;

    /// Step outcomes, as `complete` takes them.
    pub const STEP_OUTCOMES: &[(&str, u8)] = &[("ok", OK), ("transient", TRANSIENT), ("permanent", PERMANENT)];
    /// The attempt succeeded.
    pub const OK: u8 = 0;
    /// The attempt failed and may be retried.
    pub const TRANSIENT: u8 = 1;
    /// The attempt failed for good.
    pub const PERMANENT: u8 = 2;

    /// Join policies of PARALLEL and MAP.
    pub const JOINS: &[(&str, u8)] = &[("all", JOIN_ALL), ("any", JOIN_ANY), ("quorum", JOIN_QUORUM)];
    /// Every child must succeed.
    pub const JOIN_ALL: u8 = 0;
    /// One success is enough.
    pub const JOIN_ANY: u8 = 1;
    /// n successes are enough.
    pub const JOIN_QUORUM: u8 = 2;

    /// Node outcomes, as a `NODE_DONE` record's `a` names them.
    pub const NODE_OUTCOMES: &[(&str, u8)] =
        &[("ok", DONE_OK), ("failed", DONE_FAILED), ("cancelled", DONE_CANCELLED), ("skipped", DONE_SKIPPED)];
    /// Succeeded.
    pub const DONE_OK: u8 = 0;
    /// Failed.
    pub const DONE_FAILED: u8 = 1;
    /// Cancelled (by a join, a timeout, or the run's cancel).
    pub const DONE_CANCELLED: u8 = 2;
    /// Succeeded without output: a branch that chose no arm, a wait that timed out with
    /// `continue`.
    pub const DONE_SKIPPED: u8 = 3;

    /// Why a node failed or a run ended: a `NODE_DONE`'s `c` (failed or cancelled; 0 when it
    /// succeeded or was skipped) and a `RUN_DONE`'s scope word (0 when the run completed). A
    /// node that fails because a child failed carries the child's reason (and its node and
    /// token), except that an `any` or `quorum` join says `join-unreachable` and names itself.
    pub const FAILURE_REASONS: &[(&str, u8)] = &[
        ("none", WHY_NONE),
        ("step-failed", WHY_STEP_FAILED),
        ("attempt-timeout", WHY_ATTEMPT_TIMEOUT),
        ("node-timeout", WHY_NODE_TIMEOUT),
        ("wait-timeout", WHY_WAIT_TIMEOUT),
        ("run-timeout", WHY_RUN_TIMEOUT),
        ("loop-limit", WHY_LOOP_LIMIT),
        ("decision-failed", WHY_DECISION_FAILED),
        ("join-unreachable", WHY_JOIN_UNREACHABLE),
        ("cancelled", WHY_CANCELLED),
    ];
    /// Nothing failed.
    pub const WHY_NONE: u8 = 0;
    /// A step's attempt failed permanently, or its last attempt failed (the token names it).
    pub const WHY_STEP_FAILED: u8 = 1;
    /// A step's last attempt timed out (a child run is a step: its timeout is this one).
    pub const WHY_ATTEMPT_TIMEOUT: u8 = 2;
    /// A container's own timeout fell due (the token is its timer).
    pub const WHY_NODE_TIMEOUT: u8 = 3;
    /// A WAIT's timeout fell due and it fails on timeout (the token is its timer).
    pub const WHY_WAIT_TIMEOUT: u8 = 4;
    /// The run's deadline (given at start) or the root's timeout fell due.
    pub const WHY_RUN_TIMEOUT: u8 = 5;
    /// A loop was decided to go on past its maxIterations (the token is the decision).
    pub const WHY_LOOP_LIMIT: u8 = 6;
    /// The host said a decision failed, -2 (the token is the decision).
    pub const WHY_DECISION_FAILED: u8 = 7;
    /// An `any` or `quorum` join can no longer be reached: the node is the join's, the token
    /// the last failure's (or the decision of a MAP decided fewer instances than it needs; 0 for
    /// a PARALLEL of no branches).
    pub const WHY_JOIN_UNREACHABLE: u8 = 8;
    /// Cancelled: by the run's cancel, a join that was decided, or a timeout above it.
    pub const WHY_CANCELLED: u8 = 9;

    /// Most nodes in a program.
    pub const MAX_NODES: usize = 1 << 16;
    /// Deepest nesting of containers (the core walks trees recursively).
    pub const MAX_DEPTH: usize = 256;
    /// Most instances a MAP, or items a PIPELINE, may be decided to run.
    pub const MAX_INSTANCES: usize = 1 << 20;
    /// Most signal indices a program may use.
    pub const MAX_SIGNALS: usize = 1 << 16;
}

/// Every workflow program and run of one host, their timers and the outbox of records.
#[derive(Debug, Default)]
pub struct Workflows {
    programs: Vec<Program>,
    runs: Slab<Run>,
    timers: Timers,
    /// (run, token) -> frame of every attempt and decision with the host.
    inflight: FxHashMap<(u32, u32), u32>,
    /// (run, frame) -> where each stage of a running PIPELINE stands.
    pipes: FxHashMap<(u32, u32), pipeline::Pipe>,
    outbox: Vec<f64>,
}

impl Workflows {
    /// An empty core: no programs, no runs.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}
