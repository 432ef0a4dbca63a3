//! The store as a JS class, in memory (a browser host persists it with `export`/`import`).
//! Requests and results travel through `io`, a buffer inside the instance's memory that JS
//! writes and reads through a view, laid out as `orrery_core::store::wire` documents.

use orrery_core::store::wire;
use orrery_core::{Store, StoreConfig, StoreError};
use wasm_bindgen::prelude::*;

use crate::error::to_js;

/// Writes carrying at least this many bytes of keys and values first check that the instance
/// can still allocate them. A WebAssembly instance addresses at most 4 GiB, and an allocation
/// past that aborts and traps the whole instance (every store and bus of the process): 14
/// values of 256 MiB were enough. Smaller writes skip the probe (an allocation and a free).
const PROBE_BYTES: usize = 64 * 1024;

/// Room asked for beyond a write's bytes: the entry, its history slot, index growth.
const PROBE_MARGIN: usize = 64 * 1024;

/// Whether `bytes` can still be allocated: a trial allocation, freed at once (its memory stays
/// in the allocator's pool for the real one). A typed error naming the limit, never a trap.
fn room(bytes: usize) -> Result<(), JsValue> {
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(bytes.saturating_add(PROBE_MARGIN)).map_err(|_| out_of_memory(bytes))
}

/// The instance's memory in use, in bytes.
fn memory_in_use() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_size(0) * 65_536
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

fn out_of_memory(bytes: usize) -> JsValue {
    to_js(StoreError::OutOfMemory { bytes, in_use_mib: memory_in_use() >> 20 })
}

/// One in-memory store.
#[wasm_bindgen]
pub struct WasmStore {
    store: Store,
    io: Vec<u8>,
    out: Vec<u8>,
}

#[wasm_bindgen]
impl WasmStore {
    /// An empty store.
    #[wasm_bindgen(constructor)]
    pub fn new(max_value_bytes: u32, history: u32, replica: String, tombstone_ms: f64) -> Result<WasmStore, JsValue> {
        let config =
            StoreConfig { max_value_bytes: max_value_bytes as usize, history: history as usize, replica, tombstone_ms };
        Ok(Self { store: Store::new(config).map_err(to_js)?, io: vec![0; 4096], out: Vec::new() })
    }

    /// Makes `io` at least `len` bytes; returns where it starts (it may move).
    pub fn reserve(&mut self, len: u32) -> Result<u32, JsValue> {
        let len = len as usize;
        if self.io.len() < len {
            self.io.try_reserve_exact(len - self.io.len()).map_err(|_| out_of_memory(len))?;
            self.io.resize(len, 0);
        }
        Ok(self.io.as_ptr() as u32)
    }

    /// Where `io` starts in the instance's memory.
    #[wasm_bindgen(js_name = ioPtr)]
    pub fn io_ptr(&self) -> u32 {
        self.io.as_ptr() as u32
    }

    /// The id of a namespace, created on first use.
    pub fn namespace(&mut self, name: &str) -> Result<u32, JsValue> {
        self.store.namespace(name).map_err(to_js)
    }

    /// Sets how many older records each key of a namespace keeps.
    #[wasm_bindgen(js_name = setHistory)]
    pub fn set_history(&mut self, ns: u32, keep: u32) -> Result<(), JsValue> {
        self.store.set_history(ns, keep as usize).map_err(to_js)
    }

    /// The id of a writer name, for stamping writes.
    pub fn writer(&mut self, name: &str) -> Result<u32, JsValue> {
        self.store.writer(name).map_err(to_js)
    }

    /// The name behind a writer id.
    #[wasm_bindgen(js_name = writerName)]
    pub fn writer_name(&self, id: u32) -> Option<String> {
        self.store.writer_name(id).map(str::to_owned)
    }

    /// Applies `count` writes from `io` as one transaction: the version, 0, or -1 on a conflict.
    pub fn write(&mut self, count: u32, now: f64) -> Result<f64, JsValue> {
        let bytes = wire::write_bytes(&self.io, count);
        if bytes >= PROBE_BYTES {
            room(bytes)?;
        }
        wire::write(&mut self.store, &self.io, count, now).map_err(to_js)
    }

    /// The last conflict as `[index, expected, current]`.
    pub fn conflict(&mut self) -> Vec<f64> {
        wire::conflict(&mut self.store)
    }

    /// Reads a key (see `wire::get`).
    pub fn get(&mut self, ns: u32, key_len: u32, version: f64, now: f64) -> Result<f64, JsValue> {
        wire::get(&mut self.store, ns, key_len, version, now, &mut self.io).map_err(to_js)
    }

    /// A key's kept records (see `wire::history`).
    pub fn history(&mut self, ns: u32, key_len: u32, now: f64) -> Result<f64, JsValue> {
        wire::history(&mut self.store, ns, key_len, now, &mut self.io).map_err(to_js)
    }

    /// Live keys by prefix (see `wire::scan`).
    pub fn scan(&mut self, ns: u32, prefix_len: u32, after_len: u32, values: bool, now: f64) -> Result<f64, JsValue> {
        wire::scan(&mut self.store, ns, prefix_len, after_len, values, now, &mut self.io).map_err(to_js)
    }

    /// Deletes the key in `io[..key_len]` and forgets its history.
    pub fn purge(&mut self, ns: u32, key_len: u32, now: f64) -> Result<f64, JsValue> {
        let key = self.io.get(..key_len as usize).unwrap_or_default().to_vec();
        self.store.purge(ns, &key, now).map(|v| v as f64).map_err(to_js)
    }

    /// Watches the key or prefix in `io[..target_len]` (see `wire::watch`).
    #[allow(clippy::too_many_arguments, reason = "flat numbers cross the boundary cheaply")]
    pub fn watch(
        &mut self,
        ns: u32,
        target_len: u32,
        prefix: bool,
        mode: u32,
        from: f64,
        capacity: f64,
    ) -> Result<u32, JsValue> {
        wire::watch(&mut self.store, ns, target_len, prefix, mode, from, capacity, &self.io).map_err(to_js)
    }

    /// Ends a watch.
    pub fn unwatch(&mut self, id: u32) -> Result<(), JsValue> {
        self.store.unwatch(id).map_err(to_js)
    }

    /// Pauses or resumes a watch's deliveries.
    #[wasm_bindgen(js_name = setWatchPaused)]
    pub fn set_watch_paused(&mut self, id: u32, paused: bool) -> Result<(), JsValue> {
        self.store.set_watch_paused(id, paused).map_err(to_js)
    }

    /// Writes queued watch deliveries into a buffer of `capacity` bytes at `outPtr()` (see
    /// `wire::drain`).
    pub fn drain(&mut self, capacity: u32) -> Result<f64, JsValue> {
        let capacity = capacity as usize;
        if self.out.len() < capacity {
            self.out.try_reserve_exact(capacity - self.out.len()).map_err(|_| out_of_memory(capacity))?;
            self.out.resize(capacity, 0);
        }
        Ok(wire::drain(&mut self.store, &mut self.out))
    }

    /// Where the drain buffer starts in the instance's memory.
    #[wasm_bindgen(js_name = outPtr)]
    pub fn out_ptr(&self) -> u32 {
        self.out.as_ptr() as u32
    }

    /// Applies a replica's change from `io` (see `wire::merge`).
    pub fn merge(&mut self, wall: f64, logical: f64, lww: bool, now: f64) -> Result<f64, JsValue> {
        let bytes = wire::write_bytes(&self.io, 1);
        if bytes >= PROBE_BYTES {
            room(bytes)?;
        }
        wire::merge(&mut self.store, &self.io, wall, logical, lww, now).map_err(to_js)
    }

    /// Expires the keys due by `now`.
    pub fn tick(&mut self, now: f64) {
        self.store.expire(now);
    }

    /// When the next key expires, or infinity.
    #[wasm_bindgen(js_name = nextDeadline)]
    pub fn next_deadline(&self) -> f64 {
        self.store.next_deadline()
    }

    /// The latest revision.
    pub fn revision(&self) -> f64 {
        self.store.revision() as f64
    }

    /// The whole store as snapshot bytes.
    pub fn export(&self) -> Result<Vec<u8>, JsValue> {
        self.store.try_export().map_err(out_of_memory)
    }

    /// Whether `bytes` more can still be allocated (a typed `VALUE_TOO_LARGE` if not): asked
    /// before a snapshot is copied in, since wasm-bindgen's own copy would abort on failure.
    pub fn room(&self, bytes: f64) -> Result<(), JsValue> {
        room(if bytes.is_finite() && bytes > 0.0 { bytes as usize } else { 0 })
    }

    /// Replaces every key with a snapshot's.
    pub fn import(&mut self, bytes: &[u8]) -> Result<(), JsValue> {
        self.store.import(bytes).map_err(to_js)
    }
}
