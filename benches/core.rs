//! Criterion benches of the core alone, no boundary: publish to one subscriber, fan-out to ten,
//! consumer-group delivery with a per-message ack, and replay of a retained log.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use orrery_core::bus::{Retention, EVENT_CONSUMER};
use orrery_core::frame::{encode, DELIVERY_HEADER_LEN};
use orrery_core::{Bus, BusConfig, GroupOptions, StartAt, SubscribeOptions, MAIN_ENDPOINT};

const BATCH: usize = 1024;
const EP: u32 = MAIN_ENDPOINT;

fn batch_for(channel: u32) -> Vec<u8> {
    (0..BATCH).flat_map(|_| encode(channel, 1, 0.0, b"", &[0u8; 64])).collect()
}

/// Visits (consumer, attempt, seq) of every record in a drained buffer.
fn each_record(buf: &[u8], mut visit: impl FnMut(u32, u32, u64)) {
    let mut at = 0;
    while at < buf.len() {
        let word = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let seq = f64::from_le_bytes(buf[at + 8..at + 16].try_into().unwrap_or_default()) as u64;
        visit(word(at), word(at + 4), seq);
        at += DELIVERY_HEADER_LEN + word(at + DELIVERY_HEADER_LEN) as usize;
    }
}

fn fan_out(c: &mut Criterion, name: &str, subscribers: usize) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("publish+drain", |b| {
        let mut bus = Bus::default();
        let ch = bus.channel("bench").unwrap();
        for _ in 0..subscribers {
            bus.subscribe(EP, ch, SubscribeOptions::default()).unwrap();
        }
        let batch = batch_for(ch);
        let mut out = vec![0u8; 1 << 20];
        b.iter(|| {
            bus.publish(&batch, 0.0).unwrap();
            while bus.drain(EP, &mut out, 0.0).unwrap() > 0 {}
        });
    });
    group.finish();
}

fn group_ack(c: &mut Criterion) {
    let mut group = c.benchmark_group("group-ack-4");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("publish+deliver+ack", |b| {
        let mut bus = Bus::default();
        let ch = bus.channel("jobs").unwrap();
        let g = bus.group(ch, "workers", GroupOptions::default()).unwrap();
        for _ in 0..4 {
            bus.join(g, EP, BATCH).unwrap();
        }
        let batch = batch_for(ch);
        let mut out = vec![0u8; 1 << 20];
        let mut acks = Vec::with_capacity(BATCH);
        b.iter(|| {
            bus.publish(&batch, 0.0).unwrap();
            loop {
                let n = bus.drain(EP, &mut out, 0.0).unwrap();
                if n == 0 {
                    break;
                }
                each_record(&out[..n], |consumer, attempt, seq| {
                    if consumer != EVENT_CONSUMER {
                        acks.push((consumer, seq, attempt));
                    }
                });
                for (consumer, seq, attempt) in acks.drain(..) {
                    bus.ack(consumer, seq, attempt).unwrap();
                }
            }
        });
    });
    group.finish();
}

fn replay(c: &mut Criterion) {
    const RETAINED: usize = 100_000;
    let mut group = c.benchmark_group("replay-100k");
    group.throughput(Throughput::Elements(RETAINED as u64));
    group.sample_size(20);
    group.bench_function("subscribe-earliest+drain", |b| {
        let retention = Retention { max_count: RETAINED, max_bytes: 0, max_age: f64::INFINITY };
        let mut bus = Bus::new(BusConfig { default_retention: retention, ..BusConfig::default() });
        let ch = bus.channel("history").unwrap();
        let batch = batch_for(ch);
        for _ in 0..=RETAINED / BATCH {
            bus.publish(&batch, 0.0).unwrap();
        }
        let mut out = vec![0u8; 1 << 20];
        b.iter(|| {
            let options = SubscribeOptions { start: StartAt::Earliest, capacity: 4096, ..SubscribeOptions::default() };
            let sub = bus.subscribe(EP, ch, options).unwrap();
            while bus.drain(EP, &mut out, 0.0).unwrap() > 0 {}
            bus.unsubscribe(sub).unwrap();
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    fan_out(c, "pubsub-1", 1);
    fan_out(c, "fanout-10", 10);
    group_ack(c);
    replay(c);
}

criterion_group!(core, benches);
criterion_main!(core);
