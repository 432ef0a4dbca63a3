//! Criterion bench of the workflow core alone, no boundary: a 3-step sequence run from start to
//! `RUN_DONE` (start, three completes, the drains); a 3-stage pipeline over 100 items (300 step
//! answers, each moving items on; throughput per answer); and the core memory of 1,000,000 runs
//! idle on a signal (printed once, measured by a counting allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{criterion_group, Criterion, Throughput};
use orrery_core::Workflows;

/// Counts the bytes live on the heap, so the idle-run figure is the core's own.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code, reason = "a global allocator is an unsafe trait; this one only counts and delegates")]
// SAFETY: every call goes to `System` with the caller's own layout.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One node's words: kind, children (start, count), p1..p3, no timeout, no compensation, no retry.
fn node(kind: f64, start: f64, count: f64, p1: f64) -> [f64; 12] {
    [kind, start, count, p1, 0.0, 0.0, f64::INFINITY, -1.0, 1.0, 100.0, 10_000.0, 2.0]
}

/// `sequence(step, step, step)`.
fn seq3() -> Vec<f64> {
    let mut words = vec![1.0, 4.0];
    words.extend(node(1.0, 0.0, 3.0, 0.0));
    for _ in 0..3 {
        words.extend(node(0.0, 0.0, 0.0, 0.0));
    }
    words.extend([1.0, 2.0, 3.0]);
    words
}

/// `pipeline(buffer 2, [step, step, step])`.
fn pipeline3() -> Vec<f64> {
    let mut words = vec![1.0, 4.0];
    words.extend(node(8.0, 0.0, 3.0, 2.0));
    for _ in 0..3 {
        words.extend(node(0.0, 0.0, 0.0, 0.0));
    }
    words.extend([1.0, 2.0, 3.0]);
    words
}

/// Tokens of the EXECUTE and DECIDE records in `records` (kind is word 0, token word 2).
fn asks(records: &[f64]) -> impl Iterator<Item = (f64, u32)> + '_ {
    records.chunks_exact(8).filter(|r| r[0] == 1.0 || r[0] == 3.0).map(|r| (r[0], r[2] as u32))
}

/// `sequence(waitFor(signal 0))`.
fn waits() -> Vec<f64> {
    let mut words = vec![1.0, 2.0];
    words.extend(node(1.0, 0.0, 1.0, 0.0));
    words.extend(node(7.0, 0.0, 0.0, 0.0));
    words.push(1.0);
    words
}

fn ok<T>(result: Result<T, orrery_core::WorkflowError>) -> T {
    result.unwrap_or_else(|e| panic!("a benchmarked call failed: {e}"))
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("workflow");
    group.throughput(Throughput::Elements(1));
    let mut w = Workflows::new();
    let def = ok(w.define(&seq3()));
    let mut now = 0.0;
    group.bench_function("seq-3", |b| {
        b.iter(|| {
            now += 1.0;
            let run = ok(w.start(def, now, now, f64::INFINITY));
            let mut records = w.drain();
            for _ in 0..3 {
                // The newest EXECUTE's token (word 2 of the last record).
                let token = records[records.len() - 6] as u32;
                ok(w.complete(run, token, 0, now));
                records = w.drain();
            }
            ok(w.release(run));
            records.len()
        });
    });
    let def = ok(w.define(&pipeline3()));
    group.throughput(Throughput::Elements(300));
    group.bench_function("pipeline-3x100", |b| {
        b.iter(|| {
            now += 1.0;
            let run = ok(w.start(def, now, now, f64::INFINITY));
            let mut queue: std::collections::VecDeque<(f64, u32)> = asks(&w.drain()).collect();
            let mut answers = 0;
            // The host answers in the order it was asked: the decision (100 items), then each
            // attempt ok.
            while let Some((kind, token)) = queue.pop_front() {
                if kind == 3.0 {
                    ok(w.decide(run, token, 100.0, now));
                } else {
                    ok(w.complete(run, token, 0, now));
                    answers += 1;
                }
                queue.extend(asks(&w.drain()));
            }
            assert_eq!(answers, 300);
            ok(w.release(run));
        });
    });
    group.finish();
}

/// Core heap per run for 1,000,000 runs waiting on a signal.
fn idle_memory() {
    let before = LIVE.load(Ordering::Relaxed);
    let mut w = Workflows::new();
    let def = ok(w.define(&waits()));
    for i in 0..1_000_000 {
        ok(w.start(def, f64::from(i), 0.0, f64::INFINITY));
    }
    drop(w.drain());
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!("workflow/idle-1m: {:.0} MiB of core heap, {} bytes a run", bytes as f64 / 1_048_576.0, bytes / 1_000_000);
}

criterion_group!(workflow, benches);

fn main() {
    idle_memory();
    workflow();
    Criterion::default().configure_from_args().final_summary();
}
