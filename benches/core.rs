//! Criterion benches of the core alone: publish and broadcast fan-out, no boundary.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use orrery_core::frame::encode;
use orrery_core::{Bus, StartAt};

const BATCH: usize = 1024;

fn batch_for(channel: u32) -> Vec<u8> {
    (0..BATCH).flat_map(|_| encode(channel, 1, 0.0, b"", &[0u8; 64])).collect()
}

fn publish_and_drain(c: &mut Criterion, name: &str, subscribers: usize) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("publish+drain", |b| {
        let mut bus = Bus::default();
        let ch = bus.channel("bench").unwrap();
        for _ in 0..subscribers {
            bus.subscribe(ch, StartAt::Latest).unwrap();
        }
        let batch = batch_for(ch);
        let mut out = vec![0u8; 1 << 20];
        b.iter_batched_ref(
            || (),
            |()| {
                bus.publish(&batch, 0.0).unwrap();
                while bus.drain(&mut out).unwrap() > 0 {}
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    publish_and_drain(c, "pubsub-1", 1);
    publish_and_drain(c, "fanout-10", 10);
}

criterion_group!(core, benches);
criterion_main!(core);
