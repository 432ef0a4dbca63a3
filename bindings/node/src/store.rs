//! The store as a JS class. Requests and results travel through one JS-owned buffer (`io`),
//! laid out as `orrery_core::store::wire` documents; a durable store also hands every change to
//! its [`Disk`] before the call returns, and JS awaits the commit ticket.

use std::collections::HashSet;

use napi::bindgen_prelude::{Buffer, Function, Uint8Array};
use napi_derive::napi;
use orrery_core::store::wire;
use orrery_core::{Store, StoreConfig, StoreError};

use crate::disk::{row_key, Disk, Listener};
use crate::error::{to_js, Code, Result};

/// One store: in memory, or durable on disk.
#[napi]
pub struct NativeStore {
    store: Store,
    disk: Option<Disk>,
}

fn disk_error(reason: impl std::fmt::Display) -> napi::Error<Code> {
    napi::Error::new(Code("STORE_IO"), format!("the store's disk failed: {reason}"))
}

fn config(max_value_bytes: u32, history: u32, replica: String) -> StoreConfig {
    StoreConfig { max_value_bytes: max_value_bytes as usize, history: history as usize, replica }
}

#[napi]
impl NativeStore {
    /// An in-memory store.
    #[napi(constructor, catch_unwind)]
    pub fn new(max_value_bytes: u32, history: u32, replica: String) -> Result<Self> {
        Ok(Self { store: Store::new(config(max_value_bytes, history, replica)).map_err(to_js)?, disk: None })
    }

    /// Opens (or creates) a durable store at `path`; `batched` chooses group commit over a
    /// commit per write.
    #[napi(factory, catch_unwind)]
    pub fn open(path: String, batched: bool, max_value_bytes: u32, history: u32, replica: String) -> Result<Self> {
        let mut store = Store::new(config(max_value_bytes, history, replica)).map_err(to_js)?;
        let (disk, loaded) = Disk::open(&path, batched).map_err(disk_error)?;
        if let Some(meta) = loaded.meta {
            store.load(meta, loaded.entries).map_err(to_js)?;
        } else if !loaded.entries.is_empty() {
            return Err(disk_error("keys without the store's meta record"));
        }
        store.track_changes();
        Ok(Self { store, disk: Some(disk) })
    }

    /// Runs a call; on a durable store, queues what it changed for the disk.
    fn mutate<T>(&mut self, call: impl FnOnce(&mut Store) -> std::result::Result<T, StoreError>) -> Result<T> {
        if let Some(disk) = &self.disk {
            disk.check().map_err(disk_error)?;
        }
        let result = call(&mut self.store).map_err(to_js);
        self.persist()?;
        result
    }

    fn persist(&mut self) -> Result<()> {
        let Some(disk) = &mut self.disk else { return Ok(()) };
        let dirty = self.store.take_dirty();
        if dirty.is_empty() {
            return Ok(());
        }
        let mut seen = HashSet::with_capacity(dirty.len());
        let mut rows = Vec::with_capacity(dirty.len());
        for (ns, key) in dirty {
            if !seen.insert((ns, key.clone())) {
                continue;
            }
            let name = self.store.namespace_name(ns).unwrap_or_default();
            let row = self.store.entry_state(ns, &key).map(|state| state.to_bytes());
            rows.push((row_key(name, &key), row));
        }
        disk.submit(rows, self.store.meta().to_bytes()).map_err(disk_error)?;
        Ok(())
    }

    /// The id of a namespace, created on first use.
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi passes owned strings")]
    pub fn namespace(&mut self, name: String) -> Result<u32> {
        self.mutate(|s| s.namespace(&name))
    }

    /// Sets how many older records each key of a namespace keeps.
    #[napi(catch_unwind)]
    pub fn set_history(&mut self, ns: u32, keep: u32) -> Result<()> {
        self.mutate(|s| s.set_history(ns, keep as usize))
    }

    /// The id of a writer name, for stamping writes.
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi passes owned strings")]
    pub fn writer(&mut self, name: String) -> Result<u32> {
        self.mutate(|s| s.writer(&name))
    }

    /// The name behind a writer id.
    #[napi(catch_unwind)]
    pub fn writer_name(&self, id: u32) -> Option<String> {
        self.store.writer_name(id).map(str::to_owned)
    }

    /// Applies `count` writes from `io` as one transaction: the version, 0, or -1 on a conflict.
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
    pub fn write(&mut self, io: Uint8Array, count: u32, now: f64) -> Result<f64> {
        self.mutate(|s| wire::write(s, &io, count, now))
    }

    /// The last conflict as `[index, expected, current]`.
    #[napi(catch_unwind)]
    pub fn conflict(&mut self) -> Vec<f64> {
        wire::conflict(&mut self.store)
    }

    /// Reads a key (see `wire::get`).
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
    #[allow(unsafe_code, reason = "writing into a JS-owned buffer needs napi's unsafe as_mut")]
    pub fn get(&mut self, ns: u32, key_len: u32, version: f64, now: f64, mut io: Uint8Array) -> Result<f64> {
        // SAFETY: this call is synchronous on the JS thread that owns `io`; no JS code runs,
        // and nothing else can read or resize the buffer, until it returns.
        let io = unsafe { io.as_mut() };
        self.mutate(|s| wire::get(s, ns, key_len, version, now, io))
    }

    /// A key's kept records (see `wire::history`).
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
    #[allow(unsafe_code, reason = "writing into a JS-owned buffer needs napi's unsafe as_mut")]
    pub fn history(&mut self, ns: u32, key_len: u32, now: f64, mut io: Uint8Array) -> Result<f64> {
        // SAFETY: as in `get`.
        let io = unsafe { io.as_mut() };
        self.mutate(|s| wire::history(s, ns, key_len, now, io))
    }

    /// Live keys by prefix (see `wire::scan`).
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
    #[allow(unsafe_code, reason = "writing into a JS-owned buffer needs napi's unsafe as_mut")]
    pub fn scan(&mut self, ns: u32, prefix_len: u32, after_len: u32, values: bool, now: f64, mut io: Uint8Array) -> Result<f64> {
        // SAFETY: as in `get`.
        let io = unsafe { io.as_mut() };
        self.mutate(|s| wire::scan(s, ns, prefix_len, after_len, values, now, io))
    }

    /// Deletes the key in `io[..key_len]` and forgets its history.
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
    pub fn purge(&mut self, ns: u32, key_len: u32, now: f64, io: Uint8Array) -> Result<f64> {
        let key = io.get(..key_len as usize).unwrap_or_default().to_vec();
        self.mutate(|s| s.purge(ns, &key, now).map(|v| v as f64))
    }

    /// Watches the key or prefix in `io[..target_len]` (see `wire::watch`).
    #[napi(catch_unwind)]
    #[allow(clippy::too_many_arguments, reason = "flat numbers cross the boundary cheaply")]
    #[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
    pub fn watch(&mut self, ns: u32, target_len: u32, prefix: bool, mode: u32, from: f64, capacity: f64, io: Uint8Array) -> Result<u32> {
        wire::watch(&mut self.store, ns, target_len, prefix, mode, from, capacity, &io).map_err(to_js)
    }

    /// Ends a watch.
    #[napi(catch_unwind)]
    pub fn unwatch(&mut self, id: u32) -> Result<()> {
        self.store.unwatch(id).map_err(to_js)
    }

    /// Writes queued watch deliveries into `out` (see `wire::drain`).
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
    #[allow(unsafe_code, reason = "writing into a JS-owned buffer needs napi's unsafe as_mut")]
    pub fn drain(&mut self, mut out: Uint8Array) -> f64 {
        // SAFETY: as in `get`.
        let out = unsafe { out.as_mut() };
        wire::drain(&mut self.store, out)
    }

    /// Whether watch deliveries wait.
    #[napi(catch_unwind)]
    pub fn has_deliveries(&self) -> bool {
        self.store.has_deliveries()
    }

    /// Applies a replica's change (see `wire::merge`).
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
    pub fn merge(&mut self, io: Uint8Array, wall: f64, logical: u32, lww: bool, now: f64) -> Result<f64> {
        self.mutate(|s| wire::merge(s, &io, wall, logical, lww, now))
    }

    /// Expires the keys due by `now`.
    #[napi(catch_unwind)]
    pub fn tick(&mut self, now: f64) -> Result<()> {
        self.mutate(|s| {
            s.expire(now);
            Ok(())
        })
    }

    /// When the next key expires, or infinity.
    #[napi(catch_unwind)]
    pub fn next_deadline(&self) -> f64 {
        self.store.next_deadline()
    }

    /// The latest revision.
    #[napi(catch_unwind)]
    pub fn revision(&self) -> f64 {
        self.store.revision() as f64
    }

    /// The clock's last stamp as `[wall, logical]`.
    #[napi(catch_unwind)]
    pub fn clock(&self) -> Vec<f64> {
        let hlc = self.store.clock();
        vec![hlc.wall as f64, f64::from(hlc.logical)]
    }

    /// The whole store as snapshot bytes.
    #[napi(catch_unwind)]
    pub fn export(&self) -> Buffer {
        self.store.export().into()
    }

    /// Replaces every key with a snapshot's.
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
    pub fn import(&mut self, bytes: Uint8Array) -> Result<()> {
        self.mutate(|s| s.import(&bytes))
    }

    /// The ticket of the last change queued for the disk (0 in memory).
    #[napi(catch_unwind)]
    pub fn submitted(&self) -> f64 {
        self.disk.as_ref().map_or(0.0, |d| d.submitted() as f64)
    }

    /// The ticket of the last change on disk (0 in memory).
    #[napi(catch_unwind)]
    pub fn committed(&self) -> f64 {
        self.disk.as_ref().map_or(0.0, |d| d.committed() as f64)
    }

    /// Why the disk failed, if it did.
    #[napi(catch_unwind)]
    pub fn disk_failure(&self) -> Option<String> {
        self.disk.as_ref().and_then(|d| d.check().err())
    }

    /// Sets the function called on this thread with each committed ticket (-1 on a failed
    /// commit); while set, it keeps Node running. `null` clears it.
    #[napi(catch_unwind)]
    pub fn set_listener(&self, listener: Option<Function<f64, ()>>) -> Result<()> {
        let Some(disk) = &self.disk else { return Ok(()) };
        let listener: Option<Listener> = match listener {
            None => None,
            Some(f) => Some(
                f.build_threadsafe_function::<f64>()
                    .callee_handled::<false>()
                    .build()
                    .map_err(|_| to_js(StoreError::InvalidOption { option: "listener", reason: "cannot create a threadsafe function from it" }))?,
            ),
        };
        disk.set_listener(listener);
        Ok(())
    }

    /// Commits what is queued, then closes the disk (a no-op in memory).
    #[napi(catch_unwind)]
    pub fn close(&mut self) {
        if let Some(mut disk) = self.disk.take() {
            disk.close();
        }
    }
}
