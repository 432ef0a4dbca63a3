//! What the fuzz targets that start from a real store share: an empty store, and one write
//! encoded as the bindings send it (`wire::write`), so each target mutates realistic bytes.
use orrery_core::store::wire;
use orrery_core::{Store, StoreConfig};

pub fn store() -> Store {
    Store::new(StoreConfig::default()).expect("default options")
}

/// Applies one write (`action` 1 put, 2 delete) of `key` in namespace `ns` at clock `now`.
pub fn write(s: &mut Store, action: u8, ns: u32, key: &str, value: &str, ttl: f64, now: f64) {
    let mut w = vec![0u8; wire::WRITE_HEADER];
    w[0] = action;
    w[2..4].copy_from_slice(&(key.len() as u16).to_le_bytes());
    w[4..8].copy_from_slice(&ns.to_le_bytes());
    w[8..12].copy_from_slice(&(value.len() as u32).to_le_bytes());
    w[24..32].copy_from_slice(&f64::to_le_bytes(ttl));
    w.extend_from_slice(key.as_bytes());
    w.extend_from_slice(value.as_bytes());
    w.resize((w.len() + 7) & !7, 0);
    wire::write(s, &w, 1, now).expect("a valid write");
}
