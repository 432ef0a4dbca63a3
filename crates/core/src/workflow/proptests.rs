//! Random programs driven by random inputs: replay gives the same records and state, every run
//! ends with exactly one `RUN_DONE` once all its work is answered, and a saga compensates each
//! completed step that declared a compensation once, newest first. Hostile programs are refused,
//! never a panic.

use proptest::prelude::*;

use super::codes::*;
use super::tests::{branch, compile, drain, looped, map, par, seq, sleep, step, wait, Rec, N};
use super::Workflows;
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
            (inner, 0u32..3, 0u8..3, 1u32..3, timeout).prop_map(|(body, conc, join, quorum, timeout)| {
                let node = map(conc, join, quorum, body);
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
    run: u32,
    now: f64,
    log: Vec<Rec>,
    /// Attempts and decisions with the host: (token, record).
    pending: Vec<Rec>,
    inputs: Vec<(Input, String)>,
    /// Steps that completed ok and declared a compensation: (node, token), in order.
    compensable: Vec<(u32, u32)>,
    signals: u32,
}

impl Driver {
    fn new(program: Vec<f64>, seed: f64) -> Result<Self, super::WorkflowError> {
        let mut w = Workflows::new();
        let def = w.define(&program)?;
        let signals = w.programs[def as usize].signals;
        let run = w.start(def, seed, 0.0)?;
        let mut d = Self {
            w,
            program,
            run,
            now: 0.0,
            log: Vec::new(),
            pending: Vec::new(),
            inputs: Vec::new(),
            compensable: Vec::new(),
            signals,
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
            7 if extra.is_multiple_of(4) => {
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
}

/// A fresh core fed the driver's recorded inputs: the same results and records, or a panic.
fn replay(d: &Driver) -> Workflows {
    let mut fresh = Workflows::new();
    fresh.define(&d.program).unwrap();
    let run = fresh.start(0, SEED, 0.0).unwrap();
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
        root in prop::collection::vec(tree(), 1..5).prop_map(seq),
        actions in prop::collection::vec((any::<u8>(), any::<u32>(), any::<u8>()), 0..120),
    ) {
        let mut d = Driver::new(compile(&root), SEED).unwrap_or_else(|e| panic!("{e}: {root:?}"));
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
        match Driver::new(words, SEED) {
            Err(e) => prop_assert_eq!(e.code(), "DEFINITION_INVALID"),
            Ok(mut d) => {
                for (action, pick, extra) in actions {
                    d.step(action, pick, extra);
                }
            }
        }
    }
}
