//! Random programs driven by random inputs: replay gives the same records and state, every run
//! ends with exactly one `RUN_DONE` once all its work is answered, and a saga compensates each
//! completed step that declared a compensation once, newest first. Hostile programs are refused,
//! never a panic.

use proptest::prelude::*;

use super::codes::*;
use super::tests::{branch, compile, drain, looped, map, par, pipe, seq, sleep, step, wait, Rec, N};
use super::Workflows;
use crate::manifest::NO_DEADLINE;
use crate::Coded;

fn leaf() -> impl Strategy<Value = N> {
    prop_oneof![
        4 => (1u32..4, prop::option::of(5.0f64..40.0), any::<bool>(), any::<bool>()).prop_map(
            |(attempts, timeout, jitter, comp)| {
                let mut s = step().retry(attempts, 3.0, 20.0, 2.0);
                if let Some(ms) = timeout {
                    s = s.timeout(ms.round());
                }
                if jitter {
                    s = s.jitter();
                }
                if comp {
                    s = s.comp(step().retry(2, 1.0, 5.0, 1.0));
                }
                s
            }
        ),
        1 => (0.0f64..30.0).prop_map(|ms| sleep(ms.round())),
        1 => (0u32..2, any::<bool>(), prop::option::of(5.0f64..60.0)).prop_map(|(signal, go_on, timeout)| {
            let w = wait(signal, go_on);
            if let Some(ms) = timeout { w.timeout(ms.round()) } else { w }
        }),
    ]
}

fn tree() -> impl Strategy<Value = N> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        let timeout = prop::option::of(20.0f64..200.0);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(seq),
            (prop::collection::vec(inner.clone(), 0..4), 0u8..3, 1u32..4, timeout.clone()).prop_map(
                |(kids, join, quorum, timeout)| {
                    let join = if kids.is_empty() && join == JOIN_QUORUM { JOIN_ALL } else { join };
                    let quorum = if kids.is_empty() { 0 } else { 1 + (quorum - 1) % kids.len() as u32 };
                    let node = par(join, quorum, kids);
                    if let Some(ms) = timeout {
                        node.timeout(ms.round())
                    } else {
                        node
                    }
                }
            ),
            prop::collection::vec(inner.clone(), 1..4).prop_map(branch),
            (inner.clone(), any::<bool>(), 1u32..4).prop_map(|(body, until, max)| looped(until, max, body)),
            (inner.clone(), 0u32..3, 0u8..3, 1u32..3, timeout.clone()).prop_map(
                |(body, conc, join, quorum, timeout)| {
                    let node = map(conc, join, quorum, body);
                    if let Some(ms) = timeout {
                        node.timeout(ms.round())
                    } else {
                        node
                    }
                }
            ),
            (prop::collection::vec(inner, 1..4), 1u32..3, timeout).prop_map(|(stages, buffer, timeout)| {
                let node = pipe(buffer, stages);
                if let Some(ms) = timeout {
                    node.timeout(ms.round())
                } else {
                    node
                }
            }),
        ]
    })
}

/// One input as the host records it, with what the call returned.
#[derive(Debug, Clone, PartialEq)]
enum Input {
    Complete(u32, u8, f64),
    Decide(u32, f64, f64),
    Signal(u32, f64),
    Cancel(f64),
    Fire(u32, f64),
}

fn apply(w: &mut Workflows, run: u32, input: &Input) -> String {
    let result = match *input {
        Input::Complete(token, outcome, now) => w.complete(run, token, outcome, now).map(|b| b.to_string()),
        Input::Decide(token, value, now) => w.decide(run, token, value, now).map(|b| b.to_string()),
        Input::Signal(index, now) => w.signal(run, index, now).map(|()| String::new()),
        Input::Cancel(now) => w.cancel(run, now).map(|()| String::new()),
        Input::Fire(timer, now) => w.fire(run, timer, now).map(|b| b.to_string()),
    };
    result.unwrap_or_else(|e| e.code().to_owned())
}

/// A host that answers a run's records: what is with it, what it did.
struct Driver {
    w: Workflows,
    program: Vec<f64>,
    /// The run deadline given at start.
    deadline: f64,
    run: u32,
    now: f64,
    log: Vec<Rec>,
    /// Attempts and decisions with the host: (token, record).
    pending: Vec<Rec>,
    inputs: Vec<(Input, String)>,
    /// Steps that completed ok and declared a compensation: (node, token), in order.
    compensable: Vec<(u32, u32)>,
    signals: u32,
    /// Whether random actions may cancel the run.
    cancels: bool,
}

impl Driver {
    fn new(program: Vec<f64>, seed: f64, deadline: f64) -> Result<Self, super::WorkflowError> {
        let mut w = Workflows::new();
        let def = w.define(&program)?;
        let signals = w.programs[def as usize].signals;
        let run = w.start(def, seed, 0.0, deadline)?;
        let mut d = Self {
            w,
            program,
            deadline,
            run,
            now: 0.0,
            log: Vec::new(),
            pending: Vec::new(),
            inputs: Vec::new(),
            compensable: Vec::new(),
            signals,
            cancels: true,
        };
        d.pull();
        Ok(d)
    }

    fn pull(&mut self) {
        for rec in drain(&mut self.w) {
            match rec.kind {
                EXECUTE | COMPENSATE | DECIDE => self.pending.push(rec),
                CANCEL => self.pending.retain(|p| p.token != rec.token),
                _ => {}
            }
            self.log.push(rec);
        }
    }

    fn input(&mut self, input: Input) -> String {
        let result = apply(&mut self.w, self.run, &input);
        if let Input::Complete(token, OK, _) = input {
            if result == "true" {
                let rec = self.log.iter().rfind(|r| r.token == token && r.kind == EXECUTE).copied();
                if let Some(rec) = rec.filter(|r| self.w.programs[0].nodes[r.node as usize].compensate != u32::MAX) {
                    self.compensable.push((rec.node, token));
                }
            }
        }
        self.inputs.push((input, result.clone()));
        self.pull();
        result
    }

    fn done(&self) -> bool {
        self.log.iter().any(|r| r.kind == RUN_DONE)
    }

    /// A decision for a DECIDE record: `pick` chooses among the legal ones (and -2).
    fn value(&self, rec: &Rec, pick: u32, settle: bool) -> f64 {
        let node = &self.w.programs[0].nodes[rec.node as usize];
        match (node.kind, settle) {
            (BRANCH, false) if pick.is_multiple_of(8) => -2.0,
            (BRANCH, false) => f64::from(pick % (node.child_count + 1)) - 1.0,
            (BRANCH | LOOP, true) => 0.0,
            (LOOP, false) => [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, -2.0][pick as usize % 8],
            // Pipelines get more items, so that stages overlap and buffers fill.
            (PIPELINE, false) => [0.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0, -2.0][pick as usize % 8],
            (PIPELINE, true) => f64::from(pick % 3),
            (_, true) => f64::from(pick % 2),
            (_, false) => [0.0, 1.0, 2.0, 3.0, 2.0, 1.0, 3.0, -2.0][pick as usize % 8],
        }
    }

    fn answer(&mut self, at: usize, outcome: u8, pick: u32, settle: bool) {
        let rec = self.pending.remove(at);
        let input = if rec.kind == DECIDE {
            Input::Decide(rec.token, self.value(&rec, pick, settle), self.now)
        } else {
            Input::Complete(rec.token, outcome, self.now)
        };
        self.input(input);
    }

    fn fire_next(&mut self, pick: u32) -> bool {
        let next = self.w.next_deadline();
        if !next.is_finite() {
            return false;
        }
        self.now = self.now.max(next);
        let due = self.w.due(self.now);
        let pairs = due.len() / 2;
        let timer = due[2 * (pick as usize % pairs) + 1] as u32;
        self.input(Input::Fire(timer, self.now));
        true
    }

    fn step(&mut self, action: u8, pick: u32, extra: u8) {
        match action % 10 {
            0..=3 if !self.pending.is_empty() => {
                let at = pick as usize % self.pending.len();
                // Mostly successes, so that runs get far and sagas have work.
                let outcome = [OK, OK, OK, OK, TRANSIENT, PERMANENT][usize::from(extra % 6)];
                self.answer(at, outcome, pick / 7, false);
            }
            4 | 5 if !self.pending.is_empty() => {
                let at = pick as usize % self.pending.len();
                self.answer(at, OK, u32::from(extra), false);
            }
            6 if self.signals > 0 => {
                let index = pick % self.signals;
                self.input(Input::Signal(index, self.now));
            }
            7 if self.cancels && extra.is_multiple_of(4) => {
                self.input(Input::Cancel(self.now));
            }
            _ => {
                self.now += f64::from(extra % 8);
                self.fire_next(pick);
            }
        }
    }

    /// Answers everything (ok, stop loops, small maps), fires every timer, signals waiters:
    /// the run must end.
    fn settle(&mut self) {
        for round in 0..100_000u32 {
            if self.done() {
                return;
            }
            if !self.pending.is_empty() {
                self.answer(0, OK, round, true);
            } else if !self.fire_next(0) {
                assert!(self.signals > 0, "a run with nothing to answer did not end: {:?}", self.log);
                for index in 0..self.signals {
                    self.input(Input::Signal(index, self.now));
                }
            }
        }
        panic!("the run did not end");
    }
}

fn check_run(d: &Driver) {
    // (2) one RUN_DONE, the run's last record, and nothing left behind.
    let dones: Vec<usize> = (0..d.log.len()).filter(|&i| d.log[i].kind == RUN_DONE).collect();
    assert_eq!(dones, [d.log.len() - 1], "RUN_DONE exactly once, last");
    assert_eq!(d.w.next_deadline(), f64::INFINITY, "a finished run keeps no timer");
    assert!(d.w.inflight.is_empty(), "a finished run has nothing with the host");
    assert!(d.w.pipes.is_empty(), "a finished run has no pipeline running");
    check_pipelines(d);
    check_reasons(d);
    let run = d.w.runs.get(d.run).expect("the run is live until released");
    assert!(run.frames.is_empty());
    let status = d.log[dones[0]].a as u8;
    // (3) the saga: newest completion first, each once, only completed steps with a compensation.
    let first_attempts: Vec<(u32, u32)> =
        d.log.iter().filter(|r| r.kind == COMPENSATE && r.a == 1.0).map(|r| (r.b as u32, r.c as u32)).collect();
    let compensated: Vec<(u32, u32)> = d.log.iter().filter(|r| r.kind == COMPENSATED).map(|r| (r.node, 0)).collect();
    let mut expected = d.compensable.clone();
    expected.reverse();
    match status {
        COMPLETED => assert!(first_attempts.is_empty()),
        FAILED | CANCELLED => assert!(d.compensable.is_empty() && first_attempts.is_empty()),
        COMPENSATED_RUN | COMPENSATION_FAILED => {
            assert_eq!(first_attempts, expected);
            let nodes: Vec<(u32, u32)> = expected.iter().map(|&(n, _)| (n, 0)).collect();
            assert_eq!(compensated, nodes);
            let any_failed = d.log.iter().any(|r| r.kind == COMPENSATED && r.a == 1.0);
            assert_eq!(status == COMPENSATION_FAILED, any_failed);
        }
        other => panic!("status {other}"),
    }
    // (1) replaying the recorded inputs into a fresh core gives the same records and state.
    let fresh = replay(d);
    assert_eq!(format!("{:?}", fresh.runs.get(d.run)), format!("{:?}", d.w.runs.get(d.run)));
    assert_eq!(fresh.pipes, d.w.pipes);
}

/// Every failure says why, and the token it names is of the kind the reason says: a step's
/// attempt, a decision or a timer. Ok and skipped nodes say nothing, cancelled ones `cancelled`;
/// the run ends for its root's reason, or `cancelled` when it has no cause.
fn check_reasons(d: &Driver) {
    let kind_of = |token: f64| d.log.iter().find(|r| f64::from(r.token) == token && r.kind != CANCEL).map(|r| r.kind);
    let failed = |why: f64, token: f64, rec: &Rec| {
        let kind = kind_of(token);
        let expected: &[u8] = match why as u8 {
            WHY_STEP_FAILED | WHY_ATTEMPT_TIMEOUT => &[EXECUTE],
            WHY_NODE_TIMEOUT | WHY_WAIT_TIMEOUT | WHY_RUN_TIMEOUT => &[TIMER],
            WHY_LOOP_LIMIT | WHY_DECISION_FAILED => &[DECIDE],
            WHY_JOIN_UNREACHABLE => &[EXECUTE, TIMER, DECIDE],
            other => panic!("a failure with reason {other}: {rec:?}"),
        };
        assert!(
            kind.is_some_and(|k| expected.contains(&k)) || (why as u8 == WHY_JOIN_UNREACHABLE && token == 0.0),
            "reason {why} names token {token} of kind {kind:?}: {rec:?}"
        );
    };
    let mut root = None;
    for rec in &d.log {
        match rec.kind {
            NODE_DONE => match rec.a as u8 {
                DONE_OK | DONE_SKIPPED => assert_eq!(rec.c, 0.0, "{rec:?}"),
                DONE_CANCELLED => assert_eq!(rec.c, f64::from(WHY_CANCELLED), "{rec:?}"),
                _ => {
                    failed(rec.c, rec.b, rec);
                    if rec.node == 0 {
                        root = Some(rec.c);
                    }
                }
            },
            RUN_DONE => {
                let why = f64::from(rec.scope);
                match rec.a as u8 {
                    COMPLETED => assert_eq!(why, 0.0),
                    _ if rec.b < 0.0 => assert_eq!(why, f64::from(WHY_CANCELLED), "{rec:?}"),
                    _ => {
                        failed(why, rec.c, rec);
                        assert_eq!(Some(why), root, "the run ends for its root's reason");
                    }
                }
            }
            _ => {}
        }
    }
}

/// Every pipeline moved its items as the rule says, read from the records alone: stage s took
/// items in index order, one at a time, item i only after stage s - 1 finished it, and never
/// more than `buffer` ahead of stage s + 1; one that succeeded took every item through every
/// stage. A pipeline instance is its node in its parent scope.
fn check_pipelines(d: &Driver) {
    use std::collections::{HashMap, HashSet};
    type Instance = (u32, u32);
    let program = &d.w.programs[0];
    let decided: HashMap<u32, f64> = d
        .inputs
        .iter()
        .filter_map(|(input, result)| match *input {
            Input::Decide(token, value, _) if result == "true" => Some((token, value)),
            _ => None,
        })
        .collect();
    let mut asked: HashMap<Instance, u32> = HashMap::new();
    let mut started: HashMap<Instance, Vec<u32>> = HashMap::new();
    let mut scopes: HashMap<u32, (Instance, u32, u32)> = HashMap::new();
    let mut finished: HashSet<(Instance, u32, u32)> = HashSet::new();
    for rec in &d.log {
        let node = program.nodes.get(rec.node as usize);
        let pipeline = node.filter(|n| n.kind == PIPELINE);
        match (rec.kind, pipeline) {
            (DECIDE, Some(_)) => {
                asked.insert((rec.node, rec.scope), rec.token);
            }
            (SCOPE, Some(spec)) => {
                let instance = (rec.node, rec.scope);
                let (item, stage) = (rec.a as u32, rec.b as u32);
                let lanes = started.entry(instance).or_insert_with(|| vec![0; spec.child_count as usize]);
                assert_eq!(lanes[stage as usize], item, "stage {stage} takes items in index order");
                if item > 0 {
                    assert!(finished.contains(&(instance, stage, item - 1)), "one item at a time: {rec:?}");
                }
                if stage > 0 {
                    assert!(finished.contains(&(instance, stage - 1, item)), "after the stage before: {rec:?}");
                }
                if let Some(&next) = lanes.get(stage as usize + 1) {
                    assert!(u64::from(item) < u64::from(next) + u64::from(spec.limit), "backpressure: {rec:?}");
                }
                lanes[stage as usize] += 1;
                scopes.insert(rec.token, (instance, stage, item));
            }
            (SCOPE, None) => assert_eq!(rec.b, 0.0, "b = 0 in every other SCOPE"),
            (NODE_DONE, _) if rec.a == f64::from(DONE_OK) || rec.a == f64::from(DONE_SKIPPED) => {
                if let Some(&(instance, stage, item)) = scopes.get(&rec.scope) {
                    let spec = &program.nodes[instance.0 as usize];
                    if program.child(spec, stage) == rec.node {
                        finished.insert((instance, stage, item));
                    }
                }
                if pipeline.is_some() {
                    let instance = (rec.node, rec.scope);
                    let items = decided[&asked[&instance]] as u32;
                    let lanes = started.remove(&instance).unwrap_or_default();
                    assert!(lanes.iter().all(|&n| n == items), "every item through every stage: {lanes:?} of {items}");
                }
            }
            (NODE_DONE, Some(_)) => {
                started.remove(&(rec.node, rec.scope));
            }
            _ => {}
        }
    }
}

/// A fresh core fed the driver's recorded inputs: the same results and records, or a panic.
fn replay(d: &Driver) -> Workflows {
    let mut fresh = Workflows::new();
    fresh.define(&d.program).unwrap();
    let run = fresh.start(0, SEED, 0.0, d.deadline).unwrap();
    assert_eq!(run, d.run);
    for (input, result) in &d.inputs {
        assert_eq!(&apply(&mut fresh, run, input), result, "{input:?}");
    }
    assert_eq!(drain(&mut fresh), d.log);
    fresh
}

/// Mid-run, a replayed core has the same work with the host as the live one: `outstanding`
/// re-queues exactly the attempts and decisions in flight, in token order.
fn check_outstanding(d: &mut Driver) {
    let mut fresh = replay(d);
    d.w.outstanding(d.run).unwrap();
    let live = drain(&mut d.w);
    fresh.outstanding(d.run).unwrap();
    assert_eq!(drain(&mut fresh), live);
    let mut inflight: Vec<u32> = d.w.inflight.keys().map(|&(_, token)| token).collect();
    inflight.sort_unstable();
    assert_eq!(live.iter().map(|r| r.token).collect::<Vec<_>>(), inflight);
    assert!(live.iter().all(|r| matches!(r.kind, EXECUTE | COMPENSATE | DECIDE)));
}

const SEED: f64 = 12_345.678;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_runs_replay_end_once_and_compensate_in_reverse(
        root in prop_oneof![
            3 => prop::collection::vec(tree(), 1..5).prop_map(seq),
            1 => (prop::collection::vec(tree(), 1..4), 1u32..3).prop_map(|(stages, buffer)| pipe(buffer, stages)),
        ],
        actions in prop::collection::vec((any::<u8>(), any::<u32>(), any::<u8>()), 0..120),
        deadline in prop::option::weighted(0.2, 10.0f64..400.0),
    ) {
        let deadline = deadline.map_or(NO_DEADLINE, f64::round);
        let mut d = Driver::new(compile(&root), SEED, deadline).unwrap_or_else(|e| panic!("{e}: {root:?}"));
        for (action, pick, extra) in actions {
            if d.done() {
                break;
            }
            d.step(action, pick, extra);
        }
        check_outstanding(&mut d);
        d.settle();
        check_run(&d);
        // Inputs on the finished run change nothing.
        let before = d.log.len();
        d.input(Input::Cancel(d.now));
        for token in 1..20 {
            d.input(Input::Complete(token, OK, d.now));
            d.input(Input::Decide(token, 0.0, d.now));
            d.input(Input::Fire(token, d.now));
        }
        prop_assert_eq!(d.log.len(), before);
    }

    #[test]
    fn random_pipelines_move_items_by_the_rule(
        stages in prop::collection::vec(prop_oneof![
            2 => any::<bool>().prop_map(|comp| {
                let s = step().retry(3, 1.0, 5.0, 2.0);
                if comp { s.comp(step()) } else { s }
            }),
            1 => tree(),
        ], 1..5),
        buffer in 1u32..4,
        items in 0u32..8,
        // Rare: the first timer fire that finds only this deadline ends the pipeline.
        timeout in prop::option::weighted(0.15, 50.0f64..400.0),
        actions in prop::collection::vec((any::<u8>(), any::<u32>(), any::<u8>()), 0..200),
    ) {
        // A pipeline at the root, no cancels: runs get far enough for stages to overlap, buffers
        // to fill and stages to fail while others run.
        let mut root = pipe(buffer, stages);
        if let Some(ms) = timeout {
            root = root.timeout(ms.round());
        }
        let mut d = Driver::new(compile(&root), SEED, NO_DEADLINE).unwrap_or_else(|e| panic!("{e}: {root:?}"));
        d.cancels = false;
        let decide = d.pending.remove(0);
        d.input(Input::Decide(decide.token, f64::from(items), 0.0));
        for (action, pick, extra) in actions {
            if d.done() {
                break;
            }
            d.step(action, pick, extra);
        }
        check_outstanding(&mut d);
        d.settle();
        check_run(&d);
    }

    #[test]
    fn hostile_programs_are_refused_never_a_panic(
        words in prop::collection::vec(prop_oneof![
            Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(-1.0), Just(-2.0),
            Just(1e300), Just(0.5), (0u32..20).prop_map(f64::from),
        ], 0..80),
    ) {
        if let Err(e) = Workflows::new().define(&words) {
            prop_assert_eq!(e.code(), "DEFINITION_INVALID");
        }
    }

    #[test]
    fn mutated_programs_are_refused_or_run(
        root in tree(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop_oneof![
            Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), Just(0.5), Just(1e12), (0u32..12).prop_map(f64::from),
        ]), 1..4),
        actions in prop::collection::vec((any::<u8>(), any::<u32>(), any::<u8>()), 0..40),
    ) {
        let mut words = compile(&root);
        for (at, value) in edits {
            let i = at.index(words.len());
            words[i] = value;
        }
        match Driver::new(words, SEED, NO_DEADLINE) {
            Err(e) => prop_assert_eq!(e.code(), "DEFINITION_INVALID"),
            Ok(mut d) => {
                for (action, pick, extra) in actions {
                    d.step(action, pick, extra);
                }
            }
        }
    }
}
