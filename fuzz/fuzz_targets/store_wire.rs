//! The store's wire records from outside: a write batch (`wire::write`, with the count the host
//! says it holds) and a remote change to merge, both on a store with two namespaces and a key.
//! Each must apply or fail with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orrery_core::store::wire;
use orrery_core::{Store, StoreConfig};

fuzz_target!(|data: &[u8]| {
    let Some((head, buf)) = data.split_first_chunk::<2>() else { return };
    let mut store =
        Store::new(StoreConfig { max_value_bytes: 4096, ..StoreConfig::default() }).expect("default options");
    store.namespace("a").expect("a valid name");
    store.namespace("b").expect("a valid name");
    // Counts far past what the buffer holds must be refused, not allocated for.
    let count = u32::from(head[1]) << (head[0] % 32);
    let _ = wire::write_bytes(buf, count);
    let _ = wire::write(&mut store, buf, count, 1_000.0);
    // The same bytes as one remote change, stamped from the header (lww or a merge function).
    let _ = wire::merge(&mut store, buf, f64::from(head[0]) * 1e3, f64::from(head[1]), head[0] & 1 == 1, 1_000.0);
    let _ = store.export();
});
