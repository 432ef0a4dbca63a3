//! Unit tests of the PIPELINE node: start order, backpressure, failure, N = 0, timeout, scopes.

use super::codes::*;
use super::tests::{compile, drain, pipe, seq, step, wait, Host, Rec};
use super::Workflows;
use crate::manifest::NO_DEADLINE;
use crate::Coded;

/// (stage, item) of an EXECUTE in a pipeline at the root whose stages are steps (nodes 1..=k).
fn at(rec: &Rec) -> (u32, u32) {
    (rec.node - 1, rec.b as u32)
}

/// Attempts with the host (answered, cancelled and retried ones are not), in EXECUTE order.
fn pending(h: &Host) -> Vec<Rec> {
    h.all(EXECUTE).into_iter().filter(|r| h.w.inflight.contains_key(&(h.run, r.token))).collect()
}

/// A root pipeline of `stages` steps over `items`, driven by a host that always answers the
/// attempt of the lowest stage first (upstream as eager as it may be); the (stage, item) of
/// every EXECUTE, in order.
fn lowest_stage_first(buffer: u32, stages: usize, items: f64) -> (Host, Vec<(u32, u32)>) {
    let mut h = Host::start(&pipe(buffer, (0..stages).map(|_| step()).collect()));
    assert!(h.decide(0, items, 0.0));
    let mut answered = std::collections::HashSet::new();
    while h.done().is_none() {
        let next = h
            .all(EXECUTE)
            .into_iter()
            .filter(|r| !answered.contains(&r.token))
            .min_by_key(|r| r.node)
            .expect("a running pipeline has an attempt with the host");
        answered.insert(next.token);
        assert!(h.w.complete(h.run, next.token, OK, 1.0).unwrap());
        h.pull();
    }
    let order = h.all(EXECUTE).iter().map(at).collect();
    (h, order)
}

#[test]
fn three_stages_over_five_items_start_in_this_order() {
    // Buffer 1: the stages move in lockstep; an item leaves a stage before the next comes in.
    let (h, order) = lowest_stage_first(1, 3, 5.0);
    assert_eq!(
        order,
        [
            (0, 0),
            (1, 0),
            (0, 1),
            (2, 0),
            (1, 1),
            (0, 2),
            (2, 1),
            (1, 2),
            (0, 3),
            (2, 2),
            (1, 3),
            (0, 4),
            (2, 3),
            (1, 4),
            (2, 4)
        ]
    );
    assert_eq!(h.done(), Some((COMPLETED, -1.0, 0.0)));
    // Buffer 2: stage 0 runs up to two items ahead of stage 1, stage 1 two ahead of stage 2.
    let (h, order) = lowest_stage_first(2, 3, 5.0);
    assert_eq!(
        order,
        [
            (0, 0),
            (1, 0),
            (0, 1),
            (0, 2),
            (2, 0),
            (1, 1),
            (0, 3),
            (1, 2),
            (0, 4),
            (2, 1),
            (1, 3),
            (2, 2),
            (1, 4),
            (2, 3),
            (2, 4)
        ]
    );
    assert_eq!(h.done(), Some((COMPLETED, -1.0, 0.0)));
    assert!(h.w.pipes.is_empty());
}

#[test]
fn each_stage_and_item_has_its_own_scope() {
    let (h, _) = lowest_stage_first(1, 3, 5.0);
    let scopes = h.all(SCOPE);
    assert_eq!(scopes.len(), 15);
    for exec in h.all(EXECUTE) {
        let scope = scopes.iter().find(|s| s.token == exec.scope).expect("every EXECUTE runs in a SCOPE");
        assert_eq!((scope.node, scope.scope), (0, 0), "the pipeline's scope under the root scope");
        assert_eq!((scope.b as u32, scope.a as u32), at(&exec), "SCOPE: a = item, b = stage");
    }
    let mut tokens: Vec<u32> = scopes.iter().map(|s| s.token).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 15, "a new scope for each (stage, item)");
    // Other scopes keep b = 0.
    let mut h = Host::start(&super::tests::map(0, JOIN_ALL, 0, step()));
    assert!(h.decide(0, 3.0, 0.0));
    assert!(h.all(SCOPE).iter().all(|s| s.b == 0.0));
}

#[test]
fn a_slow_last_stage_holds_the_first_back_by_the_buffer() {
    for buffer in [1, 2, 3] {
        // Two stages, the second never answers: stage 0 finishes one item for stage 1 and
        // `buffer` more, then waits.
        let mut h = Host::start(&pipe(buffer, vec![step(), step()]));
        assert!(h.decide(0, 100.0, 0.0));
        while let Some(first) = pending(&h).into_iter().find(|r| r.node == 1) {
            assert!(h.w.complete(h.run, first.token, OK, 1.0).unwrap());
            h.pull();
        }
        let stage0 = |h: &Host| h.all(EXECUTE).iter().filter(|r| r.node == 1).count();
        assert_eq!(stage0(&h), 1 + buffer as usize);
        assert_eq!(h.all(EXECUTE).iter().filter(|r| r.node == 2).count(), 1);
        // Stage 1 takes its next item: room for exactly one more in stage 0.
        assert!(h.complete(2, OK, 2.0));
        while let Some(first) = pending(&h).into_iter().find(|r| r.node == 1) {
            assert!(h.w.complete(h.run, first.token, OK, 3.0).unwrap());
            h.pull();
        }
        assert_eq!(stage0(&h), 2 + buffer as usize);
    }
    // Three stages, buffer 2, the last stuck on item 0: stage 1 holds items 1 and 2 back from
    // stage 2, so it ran 3; stage 0 ran those 3 and 2 more for stage 1.
    let mut h = Host::start(&pipe(2, vec![step(), step(), step()]));
    assert!(h.decide(0, 100.0, 0.0));
    while let Some(next) = pending(&h).into_iter().find(|r| r.node != 3) {
        assert!(h.w.complete(h.run, next.token, OK, 1.0).unwrap());
        h.pull();
    }
    let count = |node: u32| h.all(EXECUTE).iter().filter(|r| r.node == node).count();
    assert_eq!((count(1), count(2), count(3)), (5, 3, 1));
    assert_eq!(h.done(), None);
}

#[test]
fn a_failing_middle_stage_cancels_the_rest_and_compensates_newest_first() {
    // Nodes: 0 pipeline, 1 stage a (comp 4), 2 stage b, 3 stage c (comp 5).
    let root = pipe(1, vec![step().comp(step()), step(), step().comp(step())]);
    let mut h = Host::start(&root);
    assert!(h.decide(0, 3.0, 0.0));
    let mut done = Vec::new();
    let mut ok = |h: &mut Host, node: u32| {
        let exec = h.last(EXECUTE, node);
        assert!(h.complete(node, OK, 1.0));
        done.push((exec.node, exec.token, exec.scope));
    };
    ok(&mut h, 1); // a 0 -> b 0, a 1
    ok(&mut h, 2); // b 0 -> c 0
    ok(&mut h, 1); // a 1 -> b 1, a 2
    ok(&mut h, 3); // c 0
    assert_eq!(h.all(EXECUTE).iter().map(at).collect::<Vec<_>>(), [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]);
    let a2 = h.last(EXECUTE, 1);
    let b1 = h.last(EXECUTE, 2);
    assert!(h.complete(2, PERMANENT, 2.0));
    assert_eq!(h.all(CANCEL).iter().map(|r| r.token).collect::<Vec<_>>(), [a2.token], "stage a's item 2 is cancelled");
    assert_eq!(h.nodes_done()[4..], [(2, DONE_FAILED), (1, DONE_CANCELLED), (0, DONE_FAILED)]);
    assert!(!h.w.complete(h.run, a2.token, OK, 2.0).unwrap(), "a cancelled attempt is stale");
    // Completions with a compensation: a 0, a 1, c 0; compensated newest first, in their scopes.
    let compensable: Vec<_> = done.iter().filter(|d| d.0 != 2).copied().collect();
    for _ in 0..3 {
        let comp = *h.all(COMPENSATE).last().unwrap();
        assert!(h.w.complete(h.run, comp.token, OK, 3.0).unwrap());
        h.pull();
    }
    let order: Vec<_> = h.all(COMPENSATE).iter().map(|r| (r.b as u32, r.c as u32, r.scope)).collect();
    assert_eq!(order, compensable.iter().rev().copied().collect::<Vec<_>>());
    assert_eq!(h.done(), Some((COMPENSATED_RUN, 2.0, f64::from(b1.token))));
    assert!(h.w.pipes.is_empty() && h.w.inflight.is_empty());
}

#[test]
fn no_items_succeed_at_once() {
    let mut h = Host::start(&seq(vec![pipe(1, vec![step(), step()]), step()]));
    assert_eq!(h.last(DECIDE, 1).a, 0.0);
    assert!(h.decide(1, 0.0, 0.0));
    assert!(h.all(SCOPE).is_empty());
    assert_eq!(h.nodes_done(), [(1, DONE_OK)]);
    assert_eq!(h.executed(), [4]);
    assert!(h.w.pipes.is_empty());
    // A failed decision (the items are not a list) fails the node; a count must be whole.
    let mut h = Host::start(&pipe(1, vec![step()]));
    let token = h.last(DECIDE, 0).token;
    for bad in [-1.0, 0.5, 1e7, f64::INFINITY] {
        assert_eq!(h.w.decide(h.run, token, bad, 0.0).unwrap_err().code(), "INVALID_ARGUMENT");
    }
    assert!(h.decide(0, -2.0, 0.0));
    assert_eq!(h.done(), Some((FAILED, 0.0, f64::from(token))));
}

#[test]
fn a_pipeline_timeout_fails_it_and_cancels_its_stages() {
    let mut h = Host::start(&seq(vec![pipe(1, vec![step(), step()]).timeout(40.0)]));
    assert!(h.decide(1, 4.0, 1.0));
    let timer = h.last(TIMER, 1);
    assert_eq!(timer.a, 40.0, "armed when the pipeline starts, its decision included");
    assert!(h.complete(2, OK, 2.0)); // stage 0 item 0 -> stage 1 item 0, stage 0 item 1
    let running: Vec<(u32, u32)> = pending(&h).iter().map(|r| (r.node, r.b as u32)).collect();
    assert_eq!(running, [(3, 0), (2, 1)]);
    let (stage0, stage1) = (h.last(EXECUTE, 2).token, h.last(EXECUTE, 3).token);
    assert_eq!(h.fire_next(), 40.0);
    assert_eq!(h.all(CANCEL).iter().map(|r| r.token).collect::<Vec<_>>(), [stage0, stage1], "in stage order");
    assert_eq!(h.nodes_done()[1..], [(2, DONE_CANCELLED), (3, DONE_CANCELLED), (1, DONE_FAILED), (0, DONE_FAILED)]);
    assert_eq!(h.done(), Some((FAILED, 1.0, f64::from(timer.token))));
    assert!(h.w.pipes.is_empty());
    assert_eq!(h.w.next_deadline(), f64::INFINITY);
}

#[test]
fn cancel_and_release_drop_a_running_pipeline() {
    let mut h = Host::start(&pipe(1, vec![step(), wait(0, false)]));
    assert!(h.decide(0, 3.0, 0.0));
    assert!(h.complete(1, OK, 1.0));
    assert_eq!(h.w.pipes.len(), 1);
    h.w.cancel(h.run, 2.0).unwrap();
    h.pull();
    assert_eq!(h.done().map(|d| d.0), Some(CANCELLED));
    assert!(h.w.pipes.is_empty());

    let mut h = Host::start(&pipe(1, vec![step()]));
    assert!(h.decide(0, 3.0, 0.0));
    h.w.release(h.run).unwrap();
    assert!(h.w.pipes.is_empty() && h.w.inflight.is_empty());
}

#[test]
fn stages_that_end_as_they_start_carry_every_item_through() {
    // A stage that is done at once (an empty sequence; a wait for a signal counted already)
    // moves the item on in the same call: 100,000 items end in one decision, on a stack that
    // never holds more than one entry a stage.
    let mut h = Host::start(&pipe(1, vec![seq(vec![]), seq(vec![]), seq(vec![])]));
    assert!(h.decide(0, 100_000.0, 0.0));
    assert_eq!(h.done(), Some((COMPLETED, -1.0, 0.0)));
    assert_eq!(h.all(SCOPE).len(), 300_000);
    // Signals counted before the stages wait: stage 1 takes one per item.
    let mut h = Host::start(&pipe(2, vec![step(), wait(0, false)]));
    for _ in 0..2 {
        h.w.signal(h.run, 0, 0.0).unwrap();
    }
    assert!(h.decide(0, 3.0, 0.0));
    for _ in 0..3 {
        assert!(h.complete(1, OK, 1.0));
    }
    assert_eq!(h.done(), None, "the third item waits for a third signal");
    h.w.signal(h.run, 0, 2.0).unwrap();
    h.pull();
    assert_eq!(h.done().map(|d| d.0), Some(COMPLETED));
}

#[test]
fn a_long_pipeline_answers_without_scanning_its_items() {
    // 200,000 items through two stages, every attempt answered one at a time.
    let mut w = Workflows::new();
    let def = w.define(&compile(&pipe(4, vec![step(), step()]))).unwrap();
    let run = w.start(def, 1.0, 0.0, NO_DEADLINE).unwrap();
    let decide = drain(&mut w)[0];
    assert!(w.decide(run, decide.token, 200_000.0, 0.0).unwrap());
    let mut pending: std::collections::VecDeque<u32> =
        drain(&mut w).iter().filter(|r| r.kind == EXECUTE).map(|r| r.token).collect();
    let mut answered = 0;
    while let Some(token) = pending.pop_front() {
        assert!(w.complete(run, token, OK, 1.0).unwrap());
        answered += 1;
        pending.extend(drain(&mut w).iter().filter(|r| r.kind == EXECUTE).map(|r| r.token));
    }
    assert_eq!(answered, 400_000);
    assert!(w.pipes.is_empty() && w.inflight.is_empty());
}

#[test]
fn bad_pipelines_are_refused_naming_the_node() {
    let mut w = Workflows::new();
    let refused = |w: &mut Workflows, words: &[f64]| {
        let err = w.define(words).unwrap_err();
        assert_eq!(err.code(), "DEFINITION_INVALID");
        err.to_string()
    };
    let no_stages = refused(&mut w, &compile(&seq(vec![pipe(1, vec![])])));
    assert!(no_stages.contains("at node 1") && no_stages.contains("stage"), "{no_stages}");
    for buffer in [0.0, -1.0, 1.5, f64::INFINITY] {
        let mut words = compile(&pipe(1, vec![step()]));
        words[2 + 3] = buffer;
        let why = refused(&mut w, &words);
        assert!(why.contains("at node 0") && why.contains("buffer"), "{why}");
    }
    w.define(&compile(&pipe(1, vec![step()]))).unwrap();
    let mut words = compile(&step());
    words[2] = 9.0;
    assert!(refused(&mut w, &words).contains("kind is not 0..=8"));
}
