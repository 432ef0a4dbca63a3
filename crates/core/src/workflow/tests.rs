//! Unit tests: one per pattern and rule, over programs built by a small tree builder.

use super::codes::*;
use super::Workflows;
use crate::manifest::NO_DEADLINE;
use crate::Coded;

/// A node of a test program, compiled by [`compile`] the way the host compiles definitions.
#[derive(Debug, Clone)]
pub struct N {
    pub kind: u8,
    pub kids: Vec<N>,
    pub p: [f64; 3],
    pub timeout: f64,
    pub retry: [f64; 4],
    pub comp: Option<Box<N>>,
}

fn n(kind: u8, kids: Vec<N>, p: [f64; 3]) -> N {
    N { kind, kids, p, timeout: f64::INFINITY, retry: [1.0, 100.0, 10_000.0, 2.0], comp: None }
}
pub fn step() -> N {
    n(STEP, vec![], [0.0; 3])
}
pub fn seq(kids: Vec<N>) -> N {
    n(SEQUENCE, kids, [0.0; 3])
}
pub fn par(join: u8, quorum: u32, kids: Vec<N>) -> N {
    n(PARALLEL, kids, [f64::from(join), f64::from(quorum), 0.0])
}
pub fn branch(arms: Vec<N>) -> N {
    n(BRANCH, arms, [0.0; 3])
}
pub fn looped(until: bool, max: u32, body: N) -> N {
    n(LOOP, vec![body], [f64::from(u8::from(until)), f64::from(max), 0.0])
}
pub fn map(concurrency: u32, join: u8, quorum: u32, body: N) -> N {
    n(MAP, vec![body], [f64::from(concurrency), f64::from(join), f64::from(quorum)])
}
pub fn sleep(ms: f64) -> N {
    n(SLEEP, vec![], [ms, 0.0, 0.0])
}
pub fn wait(signal: u32, continue_on_timeout: bool) -> N {
    n(WAIT, vec![], [f64::from(signal), f64::from(u8::from(continue_on_timeout)), 0.0])
}
pub fn pipe(buffer: u32, stages: Vec<N>) -> N {
    n(PIPELINE, stages, [f64::from(buffer), 0.0, 0.0])
}

impl N {
    pub fn timeout(mut self, ms: f64) -> Self {
        self.timeout = ms;
        self
    }
    /// Attempts, initial delay, max delay, factor; no jitter.
    pub fn retry(mut self, attempts: u32, initial: f64, max: f64, factor: f64) -> Self {
        self.retry = [f64::from(attempts), initial, max, factor];
        self
    }
    pub fn jitter(mut self) -> Self {
        self.p[2] = 1.0;
        self
    }
    pub fn comp(mut self, with: N) -> Self {
        self.comp = Some(Box::new(with));
        self
    }
}

/// The program words of a tree: preorder indices, compensations after the tree.
pub fn compile(root: &N) -> Vec<f64> {
    fn size(n: &N) -> usize {
        1 + n.kids.iter().map(size).sum::<usize>()
    }
    fn number<'a>(node: &'a N, order: &mut Vec<&'a N>) {
        order.push(node);
        for kid in &node.kids {
            number(kid, order);
        }
    }
    let mut order = Vec::new();
    number(root, &mut order);
    let tree = order.len();
    let comps: Vec<&N> = order.iter().filter_map(|n| n.comp.as_deref()).collect();
    let mut words = vec![f64::from(PROGRAM_FORMAT), (tree + comps.len()) as f64];
    let mut list = Vec::new();
    let mut next_comp = tree;
    // Preorder: a node's kids' indices follow from the subtree sizes.
    let mut starts = vec![0usize; tree];
    for (i, node) in order.iter().enumerate() {
        let mut at = i + 1;
        starts[i] = list.len();
        for kid in &node.kids {
            list.push(at as f64);
            at += size(kid);
        }
    }
    let push = |words: &mut Vec<f64>, node: &N, start: usize, compensate: f64| {
        words.extend_from_slice(&[f64::from(node.kind), start as f64, node.kids.len() as f64]);
        words.extend_from_slice(&node.p);
        words.extend_from_slice(&[node.timeout, compensate]);
        words.extend_from_slice(&node.retry);
    };
    for (i, node) in order.iter().enumerate() {
        let compensate = if node.comp.is_some() {
            next_comp += 1;
            (next_comp - 1) as f64
        } else {
            -1.0
        };
        push(&mut words, node, starts[i], compensate);
    }
    for comp in comps {
        push(&mut words, comp, 0, -1.0);
    }
    words.extend(list);
    words
}

/// One record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rec {
    pub kind: u8,
    pub run: u32,
    pub token: u32,
    pub node: u32,
    pub scope: u32,
    pub a: f64,
    pub b: f64,
    pub c: f64,
}

pub fn drain(w: &mut Workflows) -> Vec<Rec> {
    let words = w.drain();
    assert_eq!(words.len() % RECORD_WORDS, 0);
    words
        .chunks_exact(RECORD_WORDS)
        .map(|r| Rec {
            kind: r[0] as u8,
            run: r[1] as u32,
            token: r[2] as u32,
            node: r[3] as u32,
            scope: r[4] as u32,
            a: r[5],
            b: r[6],
            c: r[7],
        })
        .collect()
}

/// A test host: one run, its records so far.
pub struct Host {
    pub w: Workflows,
    pub run: u32,
    pub log: Vec<Rec>,
}

impl Host {
    pub fn start(root: &N) -> Self {
        let mut w = Workflows::new();
        let def = w.define(&compile(root)).unwrap_or_else(|e| panic!("{e}"));
        let run = w.start(def, 7.0, 0.0, NO_DEADLINE).unwrap();
        let mut host = Self { w, run, log: Vec::new() };
        host.pull();
        host
    }
    pub fn pull(&mut self) -> Vec<Rec> {
        let new = drain(&mut self.w);
        self.log.extend_from_slice(&new);
        new
    }
    /// Records of `kind` so far.
    pub fn all(&self, kind: u8) -> Vec<Rec> {
        self.log.iter().filter(|r| r.kind == kind).copied().collect()
    }
    /// The newest record of `kind` for `node`.
    pub fn last(&self, kind: u8, node: u32) -> Rec {
        *self
            .log
            .iter()
            .rev()
            .find(|r| r.kind == kind && r.node == node)
            .unwrap_or_else(|| panic!("no {kind} for {node}"))
    }
    /// Answers the newest attempt of step `node`.
    pub fn complete(&mut self, node: u32, outcome: u8, now: f64) -> bool {
        let token = self.last(EXECUTE, node).token;
        let done = self.w.complete(self.run, token, outcome, now).unwrap();
        self.pull();
        done
    }
    pub fn decide(&mut self, node: u32, value: f64, now: f64) -> bool {
        let token = self.last(DECIDE, node).token;
        let done = self.w.decide(self.run, token, value, now).unwrap();
        self.pull();
        done
    }
    pub fn fire_next(&mut self) -> f64 {
        let at = self.w.next_deadline();
        let due = self.w.due(at);
        assert!(self.w.fire(self.run, due[1] as u32, at).unwrap());
        self.pull();
        at
    }
    pub fn done(&self) -> Option<(u8, f64, f64)> {
        let dones = self.all(RUN_DONE);
        assert!(dones.len() <= 1, "RUN_DONE twice: {dones:?}");
        dones.first().map(|r| (r.a as u8, r.b, r.c))
    }
    /// Why the run ended: `RUN_DONE`'s scope word.
    pub fn why(&self) -> u8 {
        let done = self.all(RUN_DONE);
        assert_eq!(done.len(), 1, "the run has not ended: {:?}", self.log);
        u8::try_from(done[0].scope).unwrap()
    }
    /// Why node `node` last ended: its `NODE_DONE`'s `c`.
    pub fn node_why(&self, node: u32) -> u8 {
        self.last(NODE_DONE, node).c as u8
    }
    /// (node, outcome) of every `NODE_DONE`, in order.
    pub fn nodes_done(&self) -> Vec<(u32, u8)> {
        self.all(NODE_DONE).iter().map(|r| (r.node, r.a as u8)).collect()
    }
    pub fn executed(&self) -> Vec<u32> {
        self.all(EXECUTE).iter().map(|r| r.node).collect()
    }
}

#[test]
fn sequence_runs_children_in_order_and_completes() {
    let mut h = Host::start(&seq(vec![step(), step(), step()]));
    assert_eq!(h.executed(), [1]);
    assert!(h.complete(1, OK, 1.0));
    assert!(h.complete(2, OK, 2.0));
    assert_eq!(h.executed(), [1, 2, 3]);
    assert!(!h.w.complete(h.run, h.last(EXECUTE, 1).token, OK, 3.0).unwrap(), "a stale token is ignored");
    assert!(h.complete(3, OK, 3.0));
    assert_eq!(h.done(), Some((COMPLETED, -1.0, 0.0)));
    assert_eq!(h.nodes_done(), [(1, DONE_OK), (2, DONE_OK), (3, DONE_OK), (0, DONE_OK)]);
    // Tokens come from the run's counter, so they are the same on every replay.
    assert_eq!(h.all(EXECUTE).iter().map(|r| r.token).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(!h.w.complete(h.run, 3, OK, 4.0).unwrap(), "inputs on a finished run are ignored");
    h.w.cancel(h.run, 4.0).unwrap();
    h.w.signal(h.run, 0, 4.0).unwrap_err();
    assert!(h.pull().is_empty());
}

#[test]
fn sequence_fails_at_a_failed_child_and_names_it() {
    let mut h = Host::start(&seq(vec![step(), step()]));
    let token = h.last(EXECUTE, 1).token;
    assert!(h.complete(1, PERMANENT, 1.0));
    assert_eq!(h.executed(), [1]);
    assert_eq!(h.done(), Some((FAILED, 1.0, f64::from(token))));
    assert_eq!(h.nodes_done(), [(1, DONE_FAILED), (0, DONE_FAILED)]);
    assert_eq!(h.last(NODE_DONE, 0).b, f64::from(token));
}

#[test]
fn empty_containers_succeed_at_once() {
    let h = Host::start(&seq(vec![seq(vec![]), par(JOIN_ALL, 0, vec![]), seq(vec![])]));
    assert_eq!(h.done(), Some((COMPLETED, -1.0, 0.0)));
    // A long run of empty nodes does not recurse per sibling.
    let h = Host::start(&seq((0..5000).map(|_| seq(vec![])).collect()));
    assert_eq!(h.done(), Some((COMPLETED, -1.0, 0.0)));
}

#[test]
fn parallel_all_fails_at_the_first_failure_and_cancels_the_rest() {
    let mut h = Host::start(&par(JOIN_ALL, 0, vec![step(), step(), step()]));
    assert_eq!(h.executed(), [1, 2, 3]);
    assert!(h.complete(1, OK, 1.0));
    let t3 = h.last(EXECUTE, 3).token;
    assert!(h.complete(2, PERMANENT, 2.0));
    assert_eq!(h.all(CANCEL).iter().map(|r| r.token).collect::<Vec<_>>(), [t3]);
    assert_eq!(h.nodes_done(), [(1, DONE_OK), (2, DONE_FAILED), (3, DONE_CANCELLED), (0, DONE_FAILED)]);
    assert_eq!(h.done().map(|d| d.0), Some(FAILED));
    assert!(!h.w.complete(h.run, t3, OK, 3.0).unwrap(), "a cancelled attempt's result is stale");
}

#[test]
fn parallel_all_succeeds_when_every_branch_does() {
    let mut h = Host::start(&par(JOIN_ALL, 0, vec![step(), step()]));
    assert!(h.complete(2, OK, 1.0));
    assert_eq!(h.done(), None);
    assert!(h.complete(1, OK, 1.0));
    assert_eq!(h.done().map(|d| d.0), Some(COMPLETED));
}

#[test]
fn parallel_any_succeeds_at_the_first_success_and_fails_when_all_fail() {
    let mut h = Host::start(&par(JOIN_ANY, 0, vec![step(), step(), step()]));
    assert!(h.complete(1, PERMANENT, 1.0));
    assert!(h.complete(3, OK, 1.0));
    assert_eq!(h.nodes_done(), [(1, DONE_FAILED), (3, DONE_OK), (2, DONE_CANCELLED), (0, DONE_OK)]);
    assert_eq!(h.done().map(|d| d.0), Some(COMPLETED));

    let mut h = Host::start(&par(JOIN_ANY, 0, vec![step(), step()]));
    assert!(h.complete(1, PERMANENT, 1.0));
    assert_eq!(h.done(), None);
    let last = h.last(EXECUTE, 2).token;
    assert!(h.complete(2, PERMANENT, 1.0));
    assert_eq!(h.done(), Some((FAILED, 0.0, f64::from(last))));
}

#[test]
fn parallel_quorum_succeeds_at_n_and_fails_once_n_is_out_of_reach() {
    let mut h = Host::start(&par(JOIN_QUORUM, 2, vec![step(), step(), step()]));
    assert!(h.complete(1, OK, 1.0));
    assert!(h.complete(2, OK, 1.0));
    assert_eq!(h.all(CANCEL).len(), 1);
    assert_eq!(h.done().map(|d| d.0), Some(COMPLETED));

    let mut h = Host::start(&par(JOIN_QUORUM, 2, vec![step(), step(), step()]));
    assert!(h.complete(1, PERMANENT, 1.0));
    assert_eq!(h.done(), None, "two of the three can still succeed");
    assert!(h.complete(3, PERMANENT, 1.0));
    assert_eq!(h.done().map(|d| d.0), Some(FAILED));
    assert_eq!(h.nodes_done().last(), Some(&(0, DONE_FAILED)));
}

#[test]
fn parallel_timeout_fails_the_node_and_cancels_its_children() {
    let mut h = Host::start(&par(JOIN_ALL, 0, vec![step(), step()]).timeout(50.0));
    let timer = h.last(TIMER, 0);
    assert_eq!(timer.a, 50.0);
    assert!(h.complete(1, OK, 10.0));
    assert_eq!(h.w.due(49.0), Vec::<f64>::new());
    assert_eq!(h.fire_next(), 50.0);
    assert_eq!(h.nodes_done(), [(1, DONE_OK), (2, DONE_CANCELLED), (0, DONE_FAILED)]);
    assert_eq!(h.done(), Some((FAILED, 0.0, f64::from(timer.token))));
    assert_eq!(h.w.next_deadline(), f64::INFINITY);
}

#[test]
fn branch_runs_the_decided_arm_or_none() {
    let mut h = Host::start(&branch(vec![step(), step()]));
    assert_eq!(h.all(DECIDE).len(), 1);
    assert!(h.decide(0, 1.0, 1.0));
    assert_eq!(h.executed(), [2]);
    assert!(h.complete(2, OK, 2.0));
    assert_eq!(h.done().map(|d| d.0), Some(COMPLETED));

    let mut h = Host::start(&branch(vec![step()]));
    let token = h.last(DECIDE, 0).token;
    assert_eq!(h.w.decide(h.run, token, 1.0, 1.0).unwrap_err().code(), "INVALID_ARGUMENT");
    assert_eq!(h.w.decide(h.run, token, 0.5, 1.0).unwrap_err().code(), "INVALID_ARGUMENT");
    assert!(h.decide(0, -1.0, 1.0));
    assert_eq!(h.nodes_done(), [(0, DONE_SKIPPED)]);
    assert_eq!(h.done().map(|d| d.0), Some(COMPLETED));

    let mut h = Host::start(&branch(vec![step()]));
    let token = h.last(DECIDE, 0).token;
    assert!(h.decide(0, -2.0, 1.0), "the condition threw");
    assert_eq!(h.done(), Some((FAILED, 0.0, f64::from(token))));
}

#[test]
fn while_loop_decides_before_each_iteration_with_a_scope_each() {
    let mut h = Host::start(&looped(false, 3, step()));
    assert_eq!(h.last(DECIDE, 0).a, 0.0);
    assert!(h.decide(0, 1.0, 1.0));
    let scope = h.last(SCOPE, 0);
    assert_eq!((scope.scope, scope.a), (0, 0.0));
    let exec = h.last(EXECUTE, 1);
    assert_eq!((exec.scope, exec.b), (scope.token, 0.0));
    assert!(h.complete(1, OK, 2.0));
    assert_eq!(h.last(DECIDE, 0).a, 1.0);
    assert!(h.decide(0, 1.0, 3.0));
    assert_eq!(h.last(EXECUTE, 1).b, 1.0);
    assert!(h.complete(1, OK, 4.0));
    assert!(h.decide(0, 0.0, 5.0));
    assert_eq!(h.done().map(|d| d.0), Some(COMPLETED));
    assert_eq!(h.all(SCOPE).len(), 2);
}

#[test]
fn loops_fail_with_loop_limit_past_max_iterations() {
    let mut h = Host::start(&looped(false, 1, step()));
    assert!(h.decide(0, 1.0, 1.0));
    assert!(h.complete(1, OK, 2.0));
    let token = h.last(DECIDE, 0).token;
    assert!(h.decide(0, 1.0, 3.0));
    assert_eq!(h.done(), Some((FAILED, 0.0, f64::from(token))));

    // until: the body runs first, the decision comes after it.
    let mut h = Host::start(&looped(true, 2, step()));
    assert_eq!(h.executed(), [1]);
    assert!(h.complete(1, OK, 1.0));
    assert_eq!(h.last(DECIDE, 0).a, 0.0);
    assert!(h.decide(0, 1.0, 1.0));
    assert!(h.complete(1, OK, 1.0));
    assert_eq!(h.last(DECIDE, 0).a, 1.0);
    let token = h.last(DECIDE, 0).token;
    let bad = h.w.decide(h.run, token, 2.0, 1.0).unwrap_err();
    assert_eq!(bad.code(), "INVALID_ARGUMENT");
    assert!(h.decide(0, 1.0, 1.0));
    assert_eq!(h.done(), Some((FAILED, 0.0, f64::from(token))));
}

#[test]
fn map_runs_n_instances_within_its_concurrency() {
    let mut h = Host::start(&map(2, JOIN_ALL, 0, step()));
    assert!(h.decide(0, 5.0, 0.0));
    assert_eq!(h.executed().len(), 2);
    let scopes = h.all(SCOPE);
    assert_eq!(scopes.iter().map(|s| s.a).collect::<Vec<_>>(), [0.0, 1.0]);
    for i in 0..5 {
        let exec = h.all(EXECUTE)[i];
        assert_eq!(exec.b, i as f64, "EXECUTE's b is its instance");
        assert!(h.w.complete(h.run, exec.token, OK, 1.0).unwrap());
        h.pull();
        let running = h.all(EXECUTE).len() - (i + 1);
        assert!(running <= 2);
    }
    assert_eq!(h.executed().len(), 5);
    assert_eq!(h.done().map(|d| d.0), Some(COMPLETED));

    let mut h = Host::start(&map(0, JOIN_ALL, 0, step()));
    assert!(h.decide(0, 0.0, 0.0));
    assert_eq!(h.done().map(|d| d.0), Some(COMPLETED), "N = 0 succeeds at once");
}

#[test]
fn map_joins_like_parallel() {
    let mut h = Host::start(&map(0, JOIN_QUORUM, 2, step()));
    assert!(h.decide(0, 3.0, 0.0));
    assert_eq!(h.executed().len(), 3);
    let execs = h.all(EXECUTE);
    assert!(h.w.complete(h.run, execs[0].token, PERMANENT, 1.0).unwrap());
    assert!(h.w.complete(h.run, execs[2].token, OK, 1.0).unwrap());
    assert!(h.w.complete(h.run, execs[1].token, OK, 1.0).unwrap());
    h.pull();
    assert_eq!(h.done().map(|d| d.0), Some(COMPLETED));

    let mut h = Host::start(&map(0, JOIN_QUORUM, 4, step()));
    let token = h.last(DECIDE, 0).token;
    assert!(h.decide(0, 3.0, 0.0));
    assert_eq!(h.done(), Some((FAILED, 0.0, f64::from(token))), "a quorum above N cannot be reached");

    let mut h = Host::start(&map(1, JOIN_ANY, 0, step()));
    assert!(h.decide(0, 3.0, 0.0));
    assert!(h.complete(1, OK, 1.0));
    assert_eq!(h.executed().len(), 1);
    assert_eq!(h.done().map(|d| d.0), Some(COMPLETED));
}

#[test]
fn sleep_is_a_timer() {
    let mut h = Host::start(&seq(vec![sleep(100.0), step()]));
    assert_eq!(h.last(TIMER, 1).a, 100.0);
    assert_eq!(h.w.next_deadline(), 100.0);
    assert_eq!(h.w.due(99.0).len(), 0);
    assert_eq!(h.w.due(100.0), [f64::from(h.run), f64::from(h.last(TIMER, 1).token)]);
    assert_eq!(h.w.due(100.0).len(), 2, "due does not remove");
    h.fire_next();
    assert!(!h.w.fire(h.run, h.last(TIMER, 1).token, 101.0).unwrap(), "fired already");
    assert_eq!(h.executed(), [2]);
}

#[test]
fn signals_wake_a_waiter_or_wait_for_one() {
    let mut h = Host::start(&seq(vec![wait(0, false), wait(1, false), wait(0, false)]));
    h.w.signal(h.run, 1, 1.0).unwrap(); // nobody waits on 1 yet: counted
    assert!(h.pull().is_empty());
    h.w.signal(h.run, 0, 2.0).unwrap();
    h.pull();
    assert_eq!(h.nodes_done(), [(1, DONE_OK), (2, DONE_OK)]);
    assert_eq!(h.done(), None);
    assert_eq!(h.w.signal(h.run, 2, 2.0).unwrap_err().code(), "INVALID_ARGUMENT");
    h.w.signal(h.run, 0, 3.0).unwrap();
    h.pull();
    assert_eq!(h.done().map(|d| d.0), Some(COMPLETED));
}

#[test]
fn wait_timeouts_fail_or_continue() {
    let mut h = Host::start(&seq(vec![wait(0, false).timeout(10.0)]));
    h.fire_next();
    assert_eq!(h.done().map(|d| d.0), Some(FAILED));
    let mut h = Host::start(&seq(vec![wait(0, true).timeout(10.0), step()]));
    h.fire_next();
    assert_eq!(h.nodes_done(), [(1, DONE_SKIPPED)]);
    assert_eq!(h.executed(), [2]);
    // A signal in time disarms the timeout.
    let mut h = Host::start(&seq(vec![wait(0, false).timeout(10.0), step()]));
    h.w.signal(h.run, 0, 5.0).unwrap();
    h.pull();
    assert_eq!(h.w.next_deadline(), f64::INFINITY);
}

#[test]
fn transient_failures_retry_with_backoff_until_attempts_run_out() {
    let mut h = Host::start(&seq(vec![step().retry(3, 100.0, 150.0, 2.0)]));
    let first = h.last(EXECUTE, 1);
    assert!(h.complete(1, TRANSIENT, 10.0));
    let retry = h.last(RETRY, 1);
    assert_eq!((retry.token, retry.a, retry.b), (first.token, 2.0, 110.0));
    assert_eq!(h.w.next_deadline(), 110.0);
    assert!(!h.w.complete(h.run, first.token, OK, 11.0).unwrap(), "the failed attempt is stale");
    h.fire_next();
    let second = h.last(EXECUTE, 1);
    assert_eq!(second.a, 2.0);
    assert_ne!(second.token, first.token);
    assert!(h.complete(1, TRANSIENT, 120.0));
    assert_eq!(h.last(RETRY, 1).b, 270.0, "capped at maxMs");
    h.fire_next();
    assert!(h.complete(1, TRANSIENT, 300.0));
    assert_eq!(h.all(RETRY).len(), 2);
    assert_eq!(h.done().map(|d| d.0), Some(FAILED));

    // A permanent failure does not retry.
    let mut h = Host::start(&step().retry(3, 100.0, 150.0, 2.0));
    assert!(h.complete(0, PERMANENT, 1.0));
    assert_eq!(h.all(RETRY).len(), 0);
    assert_eq!(h.done().map(|d| d.0), Some(FAILED));
}

#[test]
fn jitter_comes_from_the_seed() {
    let delays = |seed: f64| {
        let mut w = Workflows::new();
        let def = w.define(&compile(&step().retry(5, 1000.0, 1e9, 2.0).jitter())).unwrap();
        let run = w.start(def, seed, 0.0, NO_DEADLINE).unwrap();
        let mut out = Vec::new();
        for _ in 0..4 {
            let exec = *drain(&mut w).iter().rev().find(|r| r.kind == EXECUTE).unwrap();
            w.complete(run, exec.token, TRANSIENT, 0.0).unwrap();
            let at = w.next_deadline();
            out.push(at);
            let timer = w.due(at)[1] as u32;
            w.fire(run, timer, at).unwrap();
        }
        out
    };
    assert_eq!(delays(1.0), delays(1.0));
    assert_ne!(delays(1.0), delays(2.0));
    assert!(delays(3.0).iter().all(|d| (0.0..=8000.0).contains(d)));
}

#[test]
fn a_step_timeout_cancels_the_attempt_and_counts_as_transient() {
    let mut h = Host::start(&step().timeout(30.0).retry(2, 5.0, 5.0, 1.0));
    let first = h.last(EXECUTE, 0);
    assert_eq!(h.fire_next(), 30.0);
    assert_eq!(h.all(CANCEL).iter().map(|r| r.token).collect::<Vec<_>>(), [first.token]);
    assert_eq!(h.last(RETRY, 0).b, 35.0);
    h.fire_next();
    assert_eq!(h.last(EXECUTE, 0).a, 2.0);
    assert_eq!(h.fire_next(), 65.0);
    assert_eq!(h.done().map(|d| d.0), Some(FAILED));
    assert_eq!(h.w.next_deadline(), f64::INFINITY);
}

#[test]
fn run_timeout_is_the_roots_timeout() {
    let mut h = Host::start(&seq(vec![step(), step()]).timeout(1000.0));
    assert!(h.complete(1, OK, 1.0));
    h.fire_next();
    assert_eq!(h.nodes_done(), [(1, DONE_OK), (2, DONE_CANCELLED), (0, DONE_FAILED)]);
    assert_eq!(h.all(CANCEL).len(), 1);
}

#[test]
fn cancel_cancels_the_tree_and_ends_cancelled() {
    let mut h = Host::start(&seq(vec![par(JOIN_ALL, 0, vec![step(), sleep(5.0), wait(0, false)])]));
    h.w.cancel(h.run, 1.0).unwrap();
    h.pull();
    assert_eq!(h.all(CANCEL).len(), 1);
    assert_eq!(
        h.nodes_done(),
        [(2, DONE_CANCELLED), (3, DONE_CANCELLED), (4, DONE_CANCELLED), (1, DONE_CANCELLED), (0, DONE_CANCELLED)]
    );
    assert_eq!(h.done(), Some((CANCELLED, -1.0, 0.0)));
    assert_eq!(h.w.next_deadline(), f64::INFINITY);
    h.w.cancel(h.run, 2.0).unwrap();
    assert!(h.pull().is_empty(), "a second cancel does nothing");
}

#[test]
fn saga_compensates_completed_steps_in_reverse_order() {
    let undo = || step().retry(2, 10.0, 10.0, 1.0);
    // Nodes: 0 seq, 1 a (comp 5), 2 b, 3 c (comp 6), 4 d; compensations 5, 6.
    let root = seq(vec![step().comp(undo()), step(), step().comp(undo()), step()]);
    let mut h = Host::start(&root);
    let a = h.last(EXECUTE, 1).token;
    assert!(h.complete(1, OK, 1.0));
    assert!(h.complete(2, OK, 2.0));
    let c = h.last(EXECUTE, 3).token;
    assert!(h.complete(3, OK, 3.0));
    let d = h.last(EXECUTE, 4).token;
    assert!(h.complete(4, PERMANENT, 4.0));
    let comp = h.all(COMPENSATE);
    assert_eq!(comp.len(), 1, "one at a time");
    assert_eq!((comp[0].node, comp[0].b, comp[0].c, comp[0].a), (6, 3.0, f64::from(c), 1.0));
    h.w.cancel(h.run, 4.5).unwrap();
    assert!(h.pull().is_empty(), "cancel during compensation is ignored");
    // The newest compensation fails transiently, is retried, then fails for good: recorded,
    // and the older one still runs.
    assert!(h.w.complete(h.run, comp[0].token, TRANSIENT, 5.0).unwrap());
    h.pull();
    h.fire_next();
    let again = *h.all(COMPENSATE).last().unwrap();
    assert_eq!(again.a, 2.0);
    assert!(h.w.complete(h.run, again.token, TRANSIENT, 20.0).unwrap());
    h.pull();
    let comp = h.all(COMPENSATE);
    assert_eq!((comp[2].node, comp[2].c), (5, f64::from(a)));
    assert!(h.w.complete(h.run, comp[2].token, OK, 21.0).unwrap());
    h.pull();
    let compensated: Vec<(u32, f64)> = h.all(COMPENSATED).iter().map(|r| (r.node, r.a)).collect();
    assert_eq!(compensated, [(3, 1.0), (1, 0.0)]);
    assert_eq!(h.done(), Some((COMPENSATION_FAILED, 4.0, f64::from(d))));
    assert_eq!(h.w.next_deadline(), f64::INFINITY);
}

#[test]
fn saga_after_cancel_ends_compensated() {
    let mut h = Host::start(&seq(vec![step().comp(step()), step()]));
    assert!(h.complete(1, OK, 1.0));
    h.w.cancel(h.run, 2.0).unwrap();
    h.pull();
    let comp = h.last(COMPENSATE, 3);
    assert!(h.w.complete(h.run, comp.token, OK, 3.0).unwrap());
    h.pull();
    assert_eq!(h.done(), Some((COMPENSATED_RUN, -1.0, 0.0)));
    // Failed steps and steps without a compensation are not compensated; a completed run is not.
    let mut h = Host::start(&seq(vec![step().comp(step())]));
    assert!(h.complete(1, OK, 1.0));
    assert_eq!(h.done().map(|d| d.0), Some(COMPLETED));
    assert!(h.all(COMPENSATE).is_empty());
}

#[test]
fn outstanding_requeues_work_in_flight() {
    let mut h = Host::start(&par(JOIN_ALL, 0, vec![step(), branch(vec![step()]), step()]));
    let first: Vec<Rec> = h.log.iter().filter(|r| matches!(r.kind, EXECUTE | DECIDE)).copied().collect();
    assert!(h.complete(1, OK, 1.0));
    h.w.outstanding(h.run).unwrap();
    let again = h.pull();
    assert_eq!(again, first[1..].to_vec());
}

#[test]
fn bad_handles_and_arguments_are_refused() {
    let mut w = Workflows::new();
    assert_eq!(w.start(0, 1.0, 0.0, NO_DEADLINE).unwrap_err().code(), "UNKNOWN_WORKFLOW");
    let def = w.define(&compile(&step())).unwrap();
    let run = w.start(def, 1.0, 0.0, NO_DEADLINE).unwrap();
    assert_eq!(w.start(def, f64::NAN, 0.0, NO_DEADLINE).unwrap_err().code(), "INVALID_ARGUMENT");
    assert_eq!(w.complete(run, 1, 3, 0.0).unwrap_err().code(), "INVALID_ARGUMENT");
    assert_eq!(w.complete(run, 1, 0, f64::NAN).unwrap_err().code(), "INVALID_ARGUMENT");
    assert_eq!(w.decide(run, 1, f64::NAN, 0.0).unwrap_err().code(), "INVALID_ARGUMENT");
    assert_eq!(w.signal(run, 0, 0.0).unwrap_err().code(), "INVALID_ARGUMENT");
    assert!(!w.decide(run, 1, 0.0, 0.0).unwrap(), "token 1 is a step attempt, not a decision");
    assert!(!w.fire(run, 99, 0.0).unwrap());
    assert!(!w.complete(run, 99, 0, 0.0).unwrap());
    w.release(run).unwrap();
    for code in [
        w.complete(run, 1, 0, 0.0).unwrap_err().code(),
        w.cancel(run, 0.0).unwrap_err().code(),
        w.outstanding(run).unwrap_err().code(),
        w.release(run).unwrap_err().code(),
        w.release(12345).unwrap_err().code(),
    ] {
        assert_eq!(code, "UNKNOWN_RUN");
    }
}

#[test]
fn release_drops_a_running_runs_timers() {
    let mut w = Workflows::new();
    let def = w.define(&compile(&sleep(10.0))).unwrap();
    let run = w.start(def, 1.0, 0.0, NO_DEADLINE).unwrap();
    assert_eq!(w.next_deadline(), 10.0);
    w.release(run).unwrap();
    assert_eq!(w.next_deadline(), f64::INFINITY);
}

#[test]
fn bad_programs_are_refused_naming_the_node() {
    let mut w = Workflows::new();
    let refused = |w: &mut Workflows, words: &[f64]| {
        let err = w.define(words).unwrap_err();
        assert_eq!(err.code(), "DEFINITION_INVALID");
        err.to_string()
    };
    assert!(refused(&mut w, &[]).contains("not a program"));
    assert!(refused(&mut w, &[2.0, 1.0]).contains("format"));
    let good = compile(&seq(vec![step(), step()]));
    w.define(&good).unwrap();
    let with = |at: usize, value: f64| {
        let mut words = good.clone();
        words[at] = value;
        words
    };
    let word = |node: usize, i: usize| 2 + node * NODE_WORDS + i;
    assert!(refused(&mut w, &with(word(1, 0), 9.0)).contains("at node 1: kind"));
    assert!(refused(&mut w, &with(word(2, 6), f64::NAN)).contains("NaN"));
    assert!(refused(&mut w, &with(word(0, 2), 3.0)).contains("at node 0"));
    assert!(refused(&mut w, &with(word(1, 8), 0.0)).contains("retryAttempts"));
    assert!(refused(&mut w, &with(word(1, 7), 2.0)).contains("at node 1"), "compensate of a listed node");
    let last = good.len() - 1;
    assert!(refused(&mut w, &with(last, 1.0)).contains("listed as a child twice"));
    assert!(refused(&mut w, &with(last, 0.0)).contains("child-list"));
    // A cycle beside the tree: nodes 1 and 2 list each other, the root lists nothing.
    let mut cycle = compile(&seq(vec![seq(vec![seq(vec![])])]));
    cycle[word(0, 2)] = 0.0;
    cycle[word(2, 1)] = 0.0;
    cycle[word(2, 2)] = 1.0;
    cycle[word(1, 1)] = 1.0;
    let area = cycle.len() - 2;
    (cycle[area], cycle[area + 1]) = (2.0, 1.0);
    cycle[word(1, 1)] = 0.0;
    cycle[word(2, 1)] = 1.0;
    assert!(refused(&mut w, &cycle).contains("not reachable"));
    assert!(refused(&mut w, &compile(&par(JOIN_QUORUM, 3, vec![step(), step()]))).contains("quorum"));
    assert!(refused(&mut w, &compile(&looped(false, 0, step()))).contains("maxIterations"));
    assert!(refused(&mut w, &compile(&sleep(-1.0))).contains("sleep"));
    let mut deep = step();
    for _ in 0..MAX_DEPTH {
        deep = seq(vec![deep]);
    }
    assert!(refused(&mut w, &compile(&deep)).contains("deeper"));
}

#[test]
fn runs_are_small() {
    let size = std::mem::size_of::<super::run::Run>();
    let frame = std::mem::size_of::<super::run::Frame>();
    assert!(size <= 128, "Run is {size} bytes");
    assert!(frame <= 56, "Frame is {frame} bytes");
}

#[test]
fn map_timeout_fails_it_and_cancels_its_instances() {
    let mut h = Host::start(&seq(vec![map(0, JOIN_ALL, 0, step()).timeout(20.0)]));
    assert!(h.decide(1, 3.0, 1.0));
    assert_eq!(h.last(TIMER, 1).a, 20.0, "armed when the map starts, its decision included");
    let exec = h.all(EXECUTE);
    assert!(h.w.complete(h.run, exec[1].token, OK, 2.0).unwrap());
    h.pull();
    h.fire_next();
    assert_eq!(h.all(CANCEL).iter().map(|r| r.token).collect::<Vec<_>>(), [exec[0].token, exec[2].token]);
    assert_eq!(
        h.nodes_done(),
        [(2, DONE_OK), (2, DONE_CANCELLED), (2, DONE_CANCELLED), (1, DONE_FAILED), (0, DONE_FAILED)]
    );
}

#[test]
fn each_completion_in_a_loop_is_compensated_once_in_its_scope() {
    let mut h = Host::start(&seq(vec![looped(false, 5, step().comp(step())), step()]));
    let mut completed = Vec::new();
    for _ in 0..3 {
        assert!(h.decide(1, 1.0, 1.0));
        let exec = h.last(EXECUTE, 2);
        completed.push((exec.scope, exec.token));
        assert!(h.complete(2, OK, 1.0));
    }
    assert!(h.decide(1, 0.0, 1.0));
    assert!(h.complete(3, PERMANENT, 1.0));
    for _ in 0..3 {
        let comp = *h.all(COMPENSATE).last().unwrap();
        assert!(h.w.complete(h.run, comp.token, OK, 2.0).unwrap());
        h.pull();
    }
    let order: Vec<(u32, u32)> = h.all(COMPENSATE).iter().map(|r| (r.scope, r.c as u32)).collect();
    completed.reverse();
    assert_eq!(order, completed);
    assert_eq!(h.done().map(|d| d.0), Some(COMPENSATED_RUN));
}

#[test]
fn nothing_is_due_at_a_nan_time() {
    let h = Host::start(&sleep(10.0));
    assert!(h.w.due(f64::NAN).is_empty());
    assert_eq!(h.w.due(f64::INFINITY).len(), 2);
}

#[test]
fn a_wide_map_answers_and_cancels_without_scanning_every_instance() {
    // 20,000 instances at once: an O(n) lookup per answer would take billions of steps here.
    let mut h = Host::start(&map(0, JOIN_ALL, 0, step()));
    assert!(h.decide(0, 20_000.0, 0.0));
    let execs = h.all(EXECUTE);
    assert_eq!(execs.len(), 20_000);
    for exec in &execs[..19_000] {
        assert!(h.w.complete(h.run, exec.token, OK, 1.0).unwrap());
    }
    assert!(h.w.complete(h.run, execs[19_000].token, PERMANENT, 1.0).unwrap());
    h.pull();
    assert_eq!(h.all(CANCEL).len(), 999);
    assert_eq!(h.done().map(|d| d.0), Some(FAILED));
    assert!(h.w.inflight.is_empty());
}

#[test]
fn a_join_with_nothing_to_join_applies_its_policy() {
    // A MAP decided N = 0: `all` succeeds; `any` and `quorum` cannot be reached, as
    // Promise.any([]) rejects.
    let mut h = Host::start(&map(0, JOIN_ALL, 0, step()));
    assert!(h.decide(0, 0.0, 0.0));
    assert_eq!((h.done(), h.why()), (Some((COMPLETED, -1.0, 0.0)), WHY_NONE));
    for (join, quorum) in [(JOIN_ANY, 0), (JOIN_QUORUM, 1), (JOIN_QUORUM, 3)] {
        let mut h = Host::start(&map(0, join, quorum, step()));
        let token = h.last(DECIDE, 0).token;
        assert!(h.decide(0, 0.0, 0.0));
        assert_eq!(h.done(), Some((FAILED, 0.0, f64::from(token))), "join {join} quorum {quorum} over nothing");
        assert_eq!((h.why(), h.node_why(0)), (WHY_JOIN_UNREACHABLE, WHY_JOIN_UNREACHABLE));
    }
    // Fewer instances than the quorum fail at once, before any runs.
    let mut h = Host::start(&map(0, JOIN_QUORUM, 3, step()));
    assert!(h.decide(0, 2.0, 0.0));
    assert!(h.executed().is_empty());
    assert_eq!((h.done().map(|d| d.0), h.why()), (Some(FAILED), WHY_JOIN_UNREACHABLE));
    // A parallel of no branches joins the same way.
    let h = Host::start(&seq(vec![par(JOIN_ANY, 0, vec![])]));
    assert_eq!((h.done().map(|d| d.0), h.why()), (Some(FAILED), WHY_JOIN_UNREACHABLE));
    // A pipeline has no join: every item must pass every stage, so no items is a success.
    let mut h = Host::start(&pipe(1, vec![step(), step()]));
    assert!(h.decide(0, 0.0, 0.0));
    assert_eq!((h.done(), h.why()), (Some((COMPLETED, -1.0, 0.0)), WHY_NONE));
}

#[test]
fn failures_say_why_from_the_node_up_to_the_run() {
    // A step's permanent failure, and a transient one with no attempts left.
    let mut h = Host::start(&seq(vec![step()]));
    assert!(h.complete(1, PERMANENT, 1.0));
    assert_eq!((h.node_why(1), h.node_why(0), h.why()), (WHY_STEP_FAILED, WHY_STEP_FAILED, WHY_STEP_FAILED));
    let mut h = Host::start(&step().retry(2, 1.0, 1.0, 1.0));
    assert!(h.complete(0, TRANSIENT, 1.0));
    h.fire_next();
    assert!(h.complete(0, TRANSIENT, 3.0));
    assert_eq!(h.why(), WHY_STEP_FAILED);
    // The last attempt timed out.
    let mut h = Host::start(&seq(vec![step().timeout(30.0)]));
    h.fire_next();
    assert_eq!((h.node_why(1), h.why()), (WHY_ATTEMPT_TIMEOUT, WHY_ATTEMPT_TIMEOUT));
    // A container's own timeout, inside the root; the root's timeout is the run's.
    let mut h = Host::start(&seq(vec![par(JOIN_ALL, 0, vec![step()]).timeout(50.0)]));
    h.fire_next();
    assert_eq!((h.node_why(2), h.node_why(1), h.why()), (WHY_CANCELLED, WHY_NODE_TIMEOUT, WHY_NODE_TIMEOUT));
    let mut h = Host::start(&looped(false, 5, sleep(60.0)).timeout(100.0));
    assert!(h.decide(0, 1.0, 0.0));
    assert_eq!(h.fire_next(), 60.0);
    assert!(h.decide(0, 1.0, 60.0));
    assert_eq!(h.fire_next(), 100.0);
    assert_eq!(h.done().map(|d| d.0), Some(FAILED));
    assert_eq!(h.why(), WHY_RUN_TIMEOUT, "a loop under the run's timeout timed out, not past its limit");
    // A wait that fails on timeout.
    let mut h = Host::start(&seq(vec![wait(0, false).timeout(10.0)]));
    h.fire_next();
    assert_eq!((h.node_why(1), h.why()), (WHY_WAIT_TIMEOUT, WHY_WAIT_TIMEOUT));
    // A loop past its limit, a decision that failed.
    let mut h = Host::start(&looped(true, 1, step()));
    assert!(h.complete(1, OK, 1.0));
    assert!(h.decide(0, 1.0, 2.0));
    assert_eq!(h.why(), WHY_LOOP_LIMIT);
    let mut h = Host::start(&seq(vec![branch(vec![step()])]));
    assert!(h.decide(1, -2.0, 1.0));
    assert_eq!((h.node_why(1), h.why()), (WHY_DECISION_FAILED, WHY_DECISION_FAILED));
    // `all` fails for its child's reason; `any` and `quorum` because too few are left, naming
    // the last failure.
    let mut h = Host::start(&par(JOIN_ALL, 0, vec![step(), step()]));
    assert!(h.complete(1, PERMANENT, 1.0));
    assert_eq!(h.why(), WHY_STEP_FAILED);
    let mut h = Host::start(&par(JOIN_QUORUM, 2, vec![step(), step(), step().timeout(5.0)]));
    assert!(h.complete(1, PERMANENT, 1.0));
    let timed_out = h.last(EXECUTE, 3).token;
    h.fire_next();
    assert_eq!(h.node_why(3), WHY_ATTEMPT_TIMEOUT);
    assert_eq!(h.done(), Some((FAILED, 0.0, f64::from(timed_out))), "the join node, the last failure's token");
    assert_eq!(h.why(), WHY_JOIN_UNREACHABLE);
    // A cancel: every cancelled node and the run say so, also after compensating.
    let mut h = Host::start(&seq(vec![step().comp(step()), par(JOIN_ALL, 0, vec![step(), sleep(9.0)])]));
    assert!(h.complete(1, OK, 1.0));
    h.w.cancel(h.run, 2.0).unwrap();
    h.pull();
    assert!(h
        .all(NODE_DONE)
        .iter()
        .filter(|r| r.a == f64::from(DONE_CANCELLED))
        .all(|r| r.c == f64::from(WHY_CANCELLED)));
    assert_eq!(h.all(NODE_DONE).len(), 5);
    let comp = h.last(COMPENSATE, 5).token;
    assert!(h.w.complete(h.run, comp, OK, 3.0).unwrap());
    h.pull();
    assert_eq!((h.done().map(|d| d.0), h.why()), (Some(COMPENSATED_RUN), WHY_CANCELLED));
    // A failure that was compensated keeps its reason.
    let mut h = Host::start(&seq(vec![step().comp(step()), step().timeout(7.0)]));
    assert!(h.complete(1, OK, 1.0));
    h.fire_next();
    let comp = h.last(COMPENSATE, 3).token;
    assert!(h.w.complete(h.run, comp, PERMANENT, 9.0).unwrap());
    h.pull();
    assert_eq!((h.done().map(|d| d.0), h.why()), (Some(COMPENSATION_FAILED), WHY_ATTEMPT_TIMEOUT));
}

/// A host whose run was started with `deadline`.
fn start_until(root: &N, deadline: f64) -> Host {
    let mut w = Workflows::new();
    let def = w.define(&compile(root)).unwrap();
    let run = w.start(def, 7.0, 0.0, deadline).unwrap();
    let mut host = Host { w, run, log: Vec::new() };
    host.pull();
    host
}

#[test]
fn a_deadline_given_at_start_times_the_run_out() {
    let mut h = start_until(&seq(vec![step().comp(step()), step()]), 500.0);
    let timer = h.last(TIMER, 0);
    assert_eq!((timer.scope, timer.a), (0, 500.0), "the deadline is a timer of the run's own");
    assert!(h.complete(1, OK, 10.0));
    let second = h.last(EXECUTE, 2).token;
    assert_eq!(h.fire_next(), 500.0);
    assert_eq!(h.all(CANCEL).iter().map(|r| r.token).collect::<Vec<_>>(), [second]);
    assert_eq!(h.nodes_done(), [(1, DONE_OK), (2, DONE_CANCELLED), (0, DONE_FAILED)]);
    assert_eq!(h.node_why(0), WHY_RUN_TIMEOUT);
    assert!(!h.w.complete(h.run, second, OK, 501.0).unwrap(), "the aborted attempt is stale");
    // Timed out, then compensated; the reason stays.
    let comp = h.last(COMPENSATE, 3).token;
    assert!(h.w.complete(h.run, comp, OK, 502.0).unwrap());
    h.pull();
    assert_eq!(h.done(), Some((COMPENSATED_RUN, 0.0, f64::from(timer.token))));
    assert_eq!(h.why(), WHY_RUN_TIMEOUT);
    assert_eq!(h.w.next_deadline(), f64::INFINITY);
}

#[test]
fn the_earlier_of_the_deadline_and_the_roots_timeout_wins() {
    // The root's timeout first: the deadline is dropped with the run.
    let mut h = start_until(&seq(vec![step()]).timeout(100.0), 500.0);
    assert_eq!(h.fire_next(), 100.0);
    assert_eq!((h.done().map(|d| d.0), h.why()), (Some(FAILED), WHY_RUN_TIMEOUT));
    assert_eq!(h.w.next_deadline(), f64::INFINITY);
    // The deadline first.
    let mut h = start_until(&seq(vec![step()]).timeout(1000.0), 200.0);
    assert_eq!(h.fire_next(), 200.0);
    assert_eq!((h.done().map(|d| d.0), h.why()), (Some(FAILED), WHY_RUN_TIMEOUT));
    assert_eq!(h.w.next_deadline(), f64::INFINITY);
    // A root step: its attempt is aborted, retries or not.
    let mut h = start_until(&step().retry(5, 1.0, 1.0, 1.0), 50.0);
    let token = h.last(EXECUTE, 0).token;
    assert_eq!(h.fire_next(), 50.0);
    assert_eq!(h.all(CANCEL).iter().map(|r| r.token).collect::<Vec<_>>(), [token]);
    assert_eq!((h.done(), h.why()), (Some((FAILED, 0.0, f64::from(h.last(TIMER, 0).token))), WHY_RUN_TIMEOUT));
    // A run that ends first, or is cancelled, leaves no deadline armed.
    let mut h = start_until(&step(), 50.0);
    assert!(h.complete(0, OK, 10.0));
    assert_eq!((h.done().map(|d| d.0), h.w.next_deadline()), (Some(COMPLETED), f64::INFINITY));
    let mut h = start_until(&step(), 50.0);
    h.w.cancel(h.run, 10.0).unwrap();
    h.pull();
    assert_eq!((h.done().map(|d| d.0), h.w.next_deadline()), (Some(CANCELLED), f64::INFINITY));
    // A deadline already past ends the run at the first fire; a root done at once arms none.
    let mut h = start_until(&seq(vec![sleep(10.0)]), -5.0);
    assert_eq!(h.fire_next(), -5.0);
    assert_eq!(h.why(), WHY_RUN_TIMEOUT);
    let h = start_until(&seq(vec![]), 50.0);
    assert_eq!((h.done().map(|d| d.0), h.w.next_deadline()), (Some(COMPLETED), f64::INFINITY));
}

#[test]
fn one_program_serves_runs_of_any_deadline_and_bad_deadlines_are_refused() {
    let mut w = Workflows::new();
    let def = w.define(&compile(&sleep(1000.0))).unwrap();
    let runs: Vec<u32> = [100.0, 200.0, NO_DEADLINE].iter().map(|&d| w.start(def, 1.0, 0.0, d).unwrap()).collect();
    assert_eq!(w.programs.len(), 1);
    assert_eq!(w.due(200.0).chunks(2).map(|p| p[0] as u32).collect::<Vec<_>>(), runs[..2]);
    for bad in [f64::NAN, f64::NEG_INFINITY] {
        let err = w.start(def, 1.0, 0.0, bad).unwrap_err();
        assert_eq!(err.code(), "INVALID_ARGUMENT");
        assert!(err.to_string().starts_with("deadline must be a finite time in ms or NO_DEADLINE"), "{err}");
    }
}
