//! Inputs the fuzz targets (`fuzz/`) found crashing the core, kept as regression tests: each
//! must now give an error (or a result), never a panic or an abort.

use orrery_core::store::wire;
use orrery_core::{Store, StoreConfig};

/// `fuzz/fuzz_targets/store_wire.rs`: a write batch whose count (2^31) is far past what its
/// 4 bytes can hold reserved room for every claimed write first: 52 GB, and the process aborted.
#[test]
fn a_write_count_past_the_buffer_is_refused_without_reserving_for_it() {
    let mut store = Store::new(StoreConfig::default()).unwrap();
    store.namespace("a").unwrap();
    for count in [2, 1 << 20, 1 << 31, u32::MAX] {
        let err = wire::write(&mut store, &[0xf6, 0xad, 0x3d, 0xa5], count, 1_000.0).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert_eq!(wire::write_bytes(&[0xf6, 0xad, 0x3d, 0xa5], count), 0);
    }
}
