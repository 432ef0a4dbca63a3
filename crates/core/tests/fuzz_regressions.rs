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

/// A write whose value length is 2^32 - 1 with a few bytes behind it. On wasm32 (32-bit `usize`)
/// the end of such a write once wrapped below its key and the slice panicked, poisoning the
/// instance; everywhere it must be refused as truncated.
#[test]
fn a_value_length_near_2_pow_32_is_refused_as_truncated() {
    let mut store = Store::new(StoreConfig::default()).unwrap();
    let ns = store.namespace("a").unwrap();
    let mut w = vec![0u8; wire::WRITE_HEADER];
    w[0] = 1; // put
    w[2..4].copy_from_slice(&1u16.to_le_bytes());
    w[4..8].copy_from_slice(&ns.to_le_bytes());
    w[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    w.extend_from_slice(b"k-and-a-few-bytes");
    let err = wire::write(&mut store, &w, 1, 1_000.0).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

/// A frame declaring a metadata section of 2^32 - 40 bytes: on wasm32 `40 + meta_len` wrapped
/// to 0, passed the bounds check and the slice panicked, poisoning the instance. Refused as
/// malformed, with nothing published.
#[test]
fn a_metadata_length_near_2_pow_32_is_refused_as_malformed() {
    use orrery_core::{frame, Bus, BusConfig, BusError, MAIN_ENDPOINT};
    let mut bus = Bus::new(BusConfig::default());
    let channel = bus.channel("a").unwrap();
    let mut batch = frame::encode(channel, 1, 0.0, b"id", b"payload");
    batch[36..40].copy_from_slice(&(u32::MAX - 39).to_le_bytes());
    let err = bus.publish_from(MAIN_ENDPOINT, &batch, 1_000.0).unwrap_err();
    assert!(matches!(err, BusError::MalformedFrame { .. }), "{err}");
    assert_eq!(bus.stats(channel).unwrap().published, 0);
}

/// `fuzz/fuzz_targets/store_wire.rs`: a scan whose `after` length is 2^32 - 1 behind a prefix of
/// 255 bytes overflowed `prefix_len + after_len` in u32 (a panic under overflow checks, a range
/// that wrapped without them). An `after` key past the buffer is no `after` key: the scan answers.
#[test]
fn a_scan_after_length_near_2_pow_32_does_not_wrap() {
    let mut store = Store::new(StoreConfig::default()).unwrap();
    let ns = store.namespace("a").unwrap();
    let mut buf = vec![0u8; 4096];
    for after_len in [u32::MAX, u32::MAX - 254, 1 << 31] {
        let scanned = wire::scan(&mut store, ns, 255, after_len, true, 1_000.0, &mut buf).unwrap();
        // 2 x bytes written + 1 when nothing is left: an empty namespace writes nothing.
        assert_eq!(scanned, 1.0);
    }
}
