//! Criterion bench of the core's agent directory alone: a capability + semver-range query over 100,000
//! registered agents (1,000 capabilities, 100 agents each), and selection by each strategy.

use criterion::{criterion_group, criterion_main, Criterion};
use orrery_core::directory::{parse_range, Directory, Health, Query, Strategy};

fn filled() -> Directory {
    let mut directory = Directory::new(42);
    for i in 0..100_000u32 {
        let capability = format!("cap-{}", i % 1_000);
        let version = format!("1.{}.0", i % 10);
        let agent = directory
            .register(
                &format!("agent-{i}"),
                "worker",
                &[(&capability, &version, i32::try_from(i % 7).unwrap_or(0))],
                &[],
                0.0,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let health = if i % 5 == 0 { Health::Degraded } else { Health::Healthy };
        directory.set_health(agent, health, 0.0).unwrap_or_else(|e| panic!("{e}"));
    }
    directory
}

fn benches(c: &mut Criterion) {
    let mut directory = filled();
    let range = parse_range("^1.2").unwrap_or_else(|e| panic!("{e}"));
    let capability = directory.name("cap-500").unwrap_or_else(|e| panic!("{e}"));
    let query = Query { capability, versions: &range, min_health: Health::Degraded, tags: &[], also: &[] };
    let mut out = Vec::new();
    let mut group = c.benchmark_group("registry");
    group.bench_function("discover-100k", |b| {
        b.iter(|| {
            directory.find(&query, &mut out);
            out.len()
        });
    });
    for (name, strategy) in [
        ("select-priority", Strategy::Priority),
        ("select-round-robin", Strategy::RoundRobin),
        ("select-least-loaded", Strategy::LeastLoaded),
        ("select-random", Strategy::Random),
    ] {
        group.bench_function(name, |b| b.iter(|| directory.select(&query, strategy, &mut out)));
    }
    group.finish();
}

criterion_group!(registry, benches);
criterion_main!(registry);
