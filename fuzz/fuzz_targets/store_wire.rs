//! The store's wire records and call arguments from outside: a write batch (`wire::write`, with
//! the count the host says it holds), a remote change to merge, and the reads and watches that take
//! a key (or prefix) length into the shared buffer, on a store with two namespaces. Each must
//! apply or fail with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orrery_core::store::wire;
use orrery_core::{Store, StoreConfig};

fuzz_target!(|data: &[u8]| {
    // 8 bytes of arguments, then the buffer.
    let Some((args, buf)) = data.split_first_chunk::<8>() else { return };
    let mut store =
        Store::new(StoreConfig { max_value_bytes: 4096, ..StoreConfig::default() }).expect("default options");
    store.namespace("a").expect("a valid name");
    store.namespace("b").expect("a valid name");
    // Counts and lengths far past what the buffer holds must be refused, not allocated for.
    let count = u32::from(args[1]) << (args[0] % 32);
    let _ = wire::write_bytes(buf, count);
    let _ = wire::write(&mut store, buf, count, 1_000.0);
    // The same bytes as one remote change, stamped from the arguments (lww or a merge function).
    let _ = wire::merge(&mut store, buf, f64::from(args[0]) * 1e3, f64::from(args[1]), args[0] & 1 == 1, 1_000.0);
    // Key lengths: small ones within the buffer, or anything up to 2^32 - 1.
    let len = |b: u8| if b & 0x80 == 0 { u32::from(b) } else { u32::MAX >> (b & 31) };
    let ns = u32::from(args[2] % 3);
    let (key_len, other_len) = (len(args[3]), len(args[4]));
    let mut scratch = buf.to_vec();
    scratch.resize(scratch.len().max(256), 0);
    let _ = wire::get(&mut store, ns, key_len, f64::from(args[5]), 2_000.0, &mut scratch);
    let _ = wire::history(&mut store, ns, key_len, 2_000.0, &mut scratch);
    let _ = wire::scan(&mut store, ns, key_len, other_len, args[5] & 1 == 1, 2_000.0, &mut scratch);
    let _ = wire::watch(
        &mut store,
        ns,
        key_len,
        args[6] & 1 == 1,
        u32::from(args[6] >> 1) % 4,
        f64::from(args[7]),
        f64::from(args[7]),
        buf,
    );
    let _ = wire::purge(&mut store, ns, key_len, 3_000.0, buf);
    let mut out = vec![0u8; 4096];
    let _ = wire::drain(&mut store, &mut out);
    let _ = store.export();
});
