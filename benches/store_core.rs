//! Criterion benches of the store core alone, no boundary: get, put, compare-and-set, a 4-key
//! transaction, and one write delivered to 100 watchers, over 10,000 keys of 64-byte values.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use orrery_core::store::{wire, Action, Condition, Start, Write, LOCAL_WRITER};
use orrery_core::{Store, StoreConfig};

const KEYS: usize = 10_000;
const VALUE: [u8; 64] = [7; 64];

fn filled() -> (Store, u32, Vec<String>, Vec<u64>) {
    let mut store = Store::new(StoreConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let ns = store.namespace("bench").unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = (0..KEYS).map(|i| format!("agent/{i:06}")).collect();
    let versions = names.iter().map(|k| store.write(&[put(ns, k, Condition::Any)], 0.0).unwrap_or(0)).collect();
    (store, ns, names, versions)
}

fn put(ns: u32, key: &str, condition: Condition) -> Write<'_> {
    Write { ns, key: key.as_bytes(), condition, action: Action::Put { value: &VALUE, ttl: 0.0 }, writer: LOCAL_WRITER }
}

fn ok(result: Result<u64, orrery_core::StoreError>) -> u64 {
    result.unwrap_or_else(|e| panic!("a benchmarked write failed: {e}"))
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;

    let (mut store, ns, names, _) = filled();
    group.bench_function("get", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            store.get(ns, names[i].as_bytes(), 0.0).ok().flatten().map(|r| r.value.len())
        });
    });
    group.bench_function("get-wire", |b| {
        let mut io = vec![0u8; 4096];
        b.iter(|| {
            i = (i + 1) % KEYS;
            io[..names[i].len()].copy_from_slice(names[i].as_bytes());
            wire::get(&mut store, ns, names[i].len() as u32, 0.0, 0.0, &mut io)
        });
    });
    group.bench_function("put", |b| {
        let (mut store, ns, names, _) = filled();
        b.iter(|| {
            i = (i + 1) % KEYS;
            ok(store.write(&[put(ns, &names[i], Condition::Any)], 0.0))
        });
    });
    group.bench_function("cas", |b| {
        let (mut store, ns, names, mut versions) = filled();
        b.iter(|| {
            i = (i + 1) % KEYS;
            versions[i] = ok(store.write(&[put(ns, &names[i], Condition::Version(versions[i]))], 0.0));
        });
    });
    group.bench_function("txn-4", |b| {
        let (mut store, ns, names, mut versions) = filled();
        b.iter(|| {
            let keys: [usize; 4] = std::array::from_fn(|_| {
                i = (i + 1) % KEYS;
                i
            });
            let writes = keys.map(|k| put(ns, &names[k], Condition::Version(versions[k])));
            let v = ok(store.write(&writes, 0.0));
            for k in keys {
                versions[k] = v;
            }
        });
    });
    group.bench_function("watch-fanout-100", |b| {
        let (mut store, ns, _, _) = filled();
        for _ in 0..100 {
            store.watch(ns, b"hot", false, Start::Now, 1024).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut out = vec![0u8; 1 << 16];
        b.iter(|| {
            ok(store.write(&[put(ns, "hot", Condition::Any)], 0.0));
            wire::drain(&mut store, &mut out)
        });
    });
    group.finish();
}

criterion_group!(store, benches);
criterion_main!(store);
