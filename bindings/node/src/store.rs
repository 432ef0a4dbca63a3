//! The store through N-API. Measured on our machines, a napi-rs class method costs ~220 ns a
//! call (it unwraps and checks the receiver every time), a plain function ~20 ns without
//! arguments and ~90 ns with even one, and a `Uint8Array` argument creates and deletes a
//! reference. So the class only owns the store's lifetime; calls are plain functions taking
//! the store's handle (an index into this thread's stores); requests and results travel
//! through the store's `io` buffer, which JS hands over once (`store_use_io`); and the two
//! hottest calls (`store_get`, `store_write`) take no arguments at all: JS writes them into
//! this thread's call block. Layouts are `orrery_core::store::wire`'s. A durable store hands
//! every change to its [`Disk`] before the call returns, and JS awaits the commit ticket.

use std::cell::RefCell;

use napi::bindgen_prelude::{Buffer, Float64Array, Function, Uint8Array, Uint8ArraySlice};
use napi_derive::napi;
use orrery_core::slab::Slab;
use orrery_core::store::persist::PersistError;
use orrery_core::store::wire;
use orrery_core::{Coded, Store, StoreConfig, StoreError};

use crate::call_block::{self, whole, Block};
use crate::disk::{Disk, Listener};
use crate::error::{to_js, Code, Result};

/// One open store: the core, its disk when durable, and the JS-owned `io` buffer its calls
/// read requests from and write results into.
struct Open {
    store: Store,
    disk: Option<Disk>,
    io: Option<Uint8Array>,
}

thread_local! {
    /// This thread's stores; a store belongs to the thread that opened it.
    static STORES: RefCell<Slab<Open>> = RefCell::new(Slab::default());
    /// The call block of the hottest calls (`store_get`, `store_write`): JS writes the store's
    /// handle and the arguments into it, and reads the result from slot 0. Measured here, a
    /// napi-rs function costs ~20 ns without arguments and ~90 ns with even one, so these
    /// calls take none.
    static CALL: Block = const { RefCell::new(None) };
}

fn closed() -> napi::Error<Code> {
    napi::Error::new(Code("CLOSED"), "the store is closed".to_owned())
}

#[allow(clippy::needless_pass_by_value, reason = "shaped for map_err")]
fn disk_error(err: PersistError) -> napi::Error<Code> {
    to_js(StoreError::from(err))
}

/// Why the file at `path` could not be opened, naming it, and its directory when that is what
/// is missing (redb reports only "No such file or directory", which does not say which).
#[allow(clippy::needless_pass_by_value, reason = "shaped for map_err")]
fn open_error(path: &str, reason: PersistError) -> napi::Error<Code> {
    let dir = std::path::Path::new(path).parent().filter(|dir| !dir.as_os_str().is_empty());
    let message = match dir {
        Some(dir) if !dir.is_dir() => {
            format!(
                "cannot open the store file {path:?}: its directory {} does not exist; create it first ({reason})",
                dir.display()
            )
        }
        _ => format!("cannot open the store file {path:?}: {reason}"),
    };
    napi::Error::new(Code(reason.code()), message)
}

/// Runs `call` with the store and its `io` bytes (empty until JS hands a buffer over).
fn with_io<T>(
    handle: u32,
    call: impl FnOnce(&mut Store, &mut [u8]) -> std::result::Result<T, StoreError>,
) -> Result<T> {
    with(handle, |open| run_io(open, call))
}

#[allow(unsafe_code, reason = "reading and writing the JS-owned io buffer needs napi's unsafe as_mut")]
fn run_io<T>(
    open: &mut Open,
    call: impl FnOnce(&mut Store, &mut [u8]) -> std::result::Result<T, StoreError>,
) -> Result<T> {
    if let Some(disk) = &open.disk {
        disk.check().map_err(disk_error)?;
    }
    let io = match open.io.as_mut() {
        // SAFETY: every call is synchronous on the JS thread that owns the buffer; no JS code
        // runs, and nothing else reads, writes, detaches or resizes it, until the call returns.
        // The reference `open.io` holds keeps it alive between calls, and the slice does not
        // outlive this one.
        Some(io) => unsafe { io.as_mut() },
        None => &mut [],
    };
    let result = call(&mut open.store, io).map_err(to_js);
    open.persist()?;
    result
}

/// Runs a hot call (call block: the store's handle, then its arguments): its result goes back
/// into slot 0, and the disk ticket that acknowledges it (the last change queued) into slot 1.
fn with_call(call: impl FnOnce(&mut Store, &mut [u8], &[f64]) -> std::result::Result<f64, StoreError>) -> Result<()> {
    call_block::run(&CALL, closed, |handle, args| {
        with(handle, |open| {
            let result = run_io(open, |store, io| call(store, io, &args))?;
            Ok([result, open.disk.as_ref().map_or(0, Disk::submitted) as f64])
        })
    })
}

/// Runs `call` on the store behind `handle`.
fn with<T>(handle: u32, call: impl FnOnce(&mut Open) -> Result<T>) -> Result<T> {
    STORES.with(|stores| {
        let mut stores = stores.borrow_mut();
        let open = stores.get_mut(handle).ok_or_else(closed)?;
        call(open)
    })
}

/// Runs a call that may change the store; a durable store then queues the changes for disk.
fn mutate<T>(handle: u32, call: impl FnOnce(&mut Store) -> std::result::Result<T, StoreError>) -> Result<T> {
    with_io(handle, |store, _| call(store))
}

impl Open {
    /// Hands the disk what the call just made changed (the order is the core's rule).
    fn persist(&mut self) -> Result<()> {
        let Some(disk) = &mut self.disk else { return Ok(()) };
        disk.record(&mut self.store).map_err(disk_error)
    }

    /// Asks the disk writer to commit what was staged.
    fn submit(&mut self) -> Result<()> {
        let Some(disk) = &mut self.disk else { return Ok(()) };
        disk.submit().map_err(disk_error)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        // Changes staged in the last JS turn still reach the disk before it closes.
        let _ = self.submit();
    }
}

fn config(max_value_bytes: u32, history: u32, replica: String, tombstone_ms: f64) -> StoreConfig {
    StoreConfig { max_value_bytes: max_value_bytes as usize, history: history as usize, replica, tombstone_ms }
}

fn register(open: Open) -> Result<NativeStore> {
    let handle = STORES.with(|stores| stores.borrow_mut().insert(open));
    let handle =
        handle.ok_or_else(|| to_js(StoreError::InvalidOption { option: "store", reason: "too many open stores" }))?;
    Ok(NativeStore { handle })
}

/// How far a closed store's disk got.
#[napi(object)]
pub struct Closed {
    /// The ticket of the last change on disk.
    pub committed: f64,
    /// Why the disk failed, if it did.
    pub failure: Option<String>,
}

/// Owns one store: closing it, or collecting it, releases the store (and commits what its disk
/// has queued). Calls go through the `store*` functions with its `handle`.
#[napi]
pub struct NativeStore {
    handle: u32,
}

impl Drop for NativeStore {
    fn drop(&mut self) {
        // Finalizers run on the thread that created the object, which owns the store.
        let _ = STORES.try_with(|stores| stores.borrow_mut().remove(self.handle));
    }
}

#[napi]
impl NativeStore {
    /// An in-memory store.
    #[napi(constructor, catch_unwind)]
    pub fn new(max_value_bytes: u32, history: u32, replica: String, tombstone_ms: f64) -> Result<Self> {
        let store = Store::new(config(max_value_bytes, history, replica, tombstone_ms)).map_err(to_js)?;
        register(Open { store, disk: None, io: None })
    }

    /// Opens (or creates) a durable store at `path`; `batched` chooses group commit over a
    /// commit per write.
    #[napi(factory, catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi passes owned strings")]
    pub fn open(
        path: String,
        batched: bool,
        max_value_bytes: u32,
        history: u32,
        replica: String,
        tombstone_ms: f64,
    ) -> Result<Self> {
        let mut store = Store::new(config(max_value_bytes, history, replica, tombstone_ms)).map_err(to_js)?;
        let disk = Disk::open(&path, batched, &mut store).map_err(|reason| open_error(&path, reason))?;
        register(Open { store, disk: Some(disk), io: None })
    }

    /// The handle the `store*` functions take.
    #[napi(getter)]
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Sets the function called on this thread with each committed ticket (-1 on a failed
    /// commit); while set, it keeps Node running. `null` clears it.
    #[napi(catch_unwind)]
    pub fn set_listener(&self, listener: Option<Function<f64, ()>>) -> Result<()> {
        let listener: Option<Listener> = match listener {
            None => None,
            Some(f) => Some(f.build_threadsafe_function::<f64>().callee_handled::<false>().build().map_err(|_| {
                to_js(StoreError::InvalidOption {
                    option: "listener",
                    reason: "cannot create a threadsafe function from it",
                })
            })?),
        };
        with(self.handle, |open| {
            if let Some(disk) = &open.disk {
                disk.set_listener(listener);
            }
            Ok(())
        })
    }

    /// Commits what is queued, then releases the store; says how far the disk got. Later
    /// calls fail with `CLOSED`.
    #[napi(catch_unwind)]
    pub fn close(&mut self) -> Closed {
        let open = STORES.with(|stores| stores.borrow_mut().remove(self.handle));
        // The slot may be reused by another store: the finalizer must not remove that one.
        self.handle = u32::MAX;
        let Some(mut open) = open else { return Closed { committed: 0.0, failure: None } };
        let submitted = open.submit();
        let Some(mut disk) = open.disk.take() else { return Closed { committed: 0.0, failure: None } };
        disk.close();
        if let Err(e) = submitted {
            return Closed { committed: disk.committed() as f64, failure: Some(e.reason.clone()) };
        }
        Closed { committed: disk.committed() as f64, failure: disk.check().err().map(|e| e.to_string()) }
    }
}

/// The id of a namespace, created on first use.
#[napi(catch_unwind)]
#[allow(clippy::needless_pass_by_value, reason = "napi passes owned strings")]
pub fn store_namespace(handle: u32, name: String) -> Result<u32> {
    mutate(handle, |s| s.namespace(&name))
}

/// Sets how many older records each key of a namespace keeps.
#[napi(catch_unwind)]
pub fn store_set_history(handle: u32, ns: u32, keep: u32) -> Result<()> {
    mutate(handle, |s| s.set_history(ns, keep as usize))
}

/// The id of a writer name, for stamping writes.
#[napi(catch_unwind)]
#[allow(clippy::needless_pass_by_value, reason = "napi passes owned strings")]
pub fn store_writer(handle: u32, name: String) -> Result<u32> {
    mutate(handle, |s| s.writer(&name))
}

/// The name behind a writer id.
#[napi(catch_unwind)]
pub fn store_writer_name(handle: u32, id: u32) -> Result<Option<String>> {
    with(handle, |open| Ok(open.store.writer_name(id).map(str::to_owned)))
}

/// Hands the store the buffer its calls read requests from and write results into: kept (and
/// kept alive) until the next call of this, so hot calls pass no buffer (a typed-array argument
/// costs a conversion on every call).
#[napi(catch_unwind)]
pub fn store_use_io(handle: u32, io: Uint8Array) -> Result<()> {
    with(handle, |open| {
        open.io = Some(io);
        Ok(())
    })
}

/// Hands this thread's call block to the hot calls (once per thread).
#[napi(catch_unwind)]
pub fn store_use_call_block(block: Float64Array) {
    CALL.with(|slot| *slot.borrow_mut() = Some(block));
}

/// Applies writes from `io` as one transaction (call block: handle, count, now); the result is
/// the version, 0, or -1 on a conflict.
#[napi(catch_unwind)]
pub fn store_write() -> Result<()> {
    with_call(|s, io, args| {
        let count = whole(args[0])
            .ok_or(StoreError::MalformedWrite { index: 0, reason: "the write count is not a whole number" })?;
        wire::write(s, io, count, args[1])
    })
}

/// The last conflict as `[index, expected, current]`.
#[napi(catch_unwind)]
pub fn store_conflict(handle: u32) -> Result<Vec<f64>> {
    with(handle, |open| Ok(wire::conflict(&mut open.store)))
}

/// Reads a key (call block: handle, namespace, key length, version, now; see `wire::get`).
#[napi(catch_unwind)]
pub fn store_get() -> Result<()> {
    with_call(|s, io, args| {
        let (Some(ns), Some(key_len)) = (whole(args[0]), whole(args[1])) else {
            return Err(StoreError::InvalidKey {
                key: String::new(),
                reason: "its namespace or length is not a whole number",
            });
        };
        wire::get(s, ns, key_len, args[2], args[3], io)
    })
}

/// A key's kept records (see `wire::history`).
#[napi(catch_unwind)]
pub fn store_history(handle: u32, ns: u32, key_len: u32, now: f64) -> Result<f64> {
    with_io(handle, |s, io| wire::history(s, ns, key_len, now, io))
}

/// Live keys by prefix (see `wire::scan`).
#[napi(catch_unwind)]
pub fn store_scan(handle: u32, ns: u32, prefix_len: u32, after_len: u32, values: bool, now: f64) -> Result<f64> {
    with_io(handle, |s, io| wire::scan(s, ns, prefix_len, after_len, values, now, io))
}

/// Deletes the key in `io[..key_len]` and forgets its history.
#[napi(catch_unwind)]
pub fn store_purge(handle: u32, ns: u32, key_len: u32, now: f64) -> Result<f64> {
    with_io(handle, |s, io| wire::purge(s, ns, key_len, now, io))
}

/// Watches the key or prefix in `io[..target_len]` (see `wire::watch`).
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments, reason = "flat numbers cross the boundary cheaply")]
pub fn store_watch(
    handle: u32,
    ns: u32,
    target_len: u32,
    prefix: bool,
    mode: u32,
    from: f64,
    capacity: f64,
) -> Result<u32> {
    with_io(handle, |s, io| wire::watch(s, ns, target_len, prefix, mode, from, capacity, io))
}

/// Ends a watch.
#[napi(catch_unwind)]
pub fn store_unwatch(handle: u32, id: u32) -> Result<()> {
    // Not through `mutate`: ending a watch persists nothing, and must work after a disk failure.
    with(handle, |open| open.store.unwatch(id).map_err(to_js))
}

/// Writes queued watch deliveries into `out` (see `wire::drain`).
#[napi(catch_unwind)]
#[allow(unsafe_code, reason = "writing into a JS-owned buffer needs napi's unsafe as_mut")]
#[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
pub fn store_drain(handle: u32, mut out: Uint8Array) -> Result<f64> {
    // SAFETY: as for `io` in `with_io`: the call is synchronous on the thread owning `out`.
    let out = unsafe { out.as_mut() };
    with(handle, |open| Ok(wire::drain(&mut open.store, out)))
}

/// Pauses or resumes a watch's deliveries.
#[napi(catch_unwind)]
pub fn store_set_watch_paused(handle: u32, id: u32, paused: bool) -> Result<()> {
    with(handle, |open| open.store.set_watch_paused(id, paused).map_err(to_js))
}

/// Applies a replica's change (see `wire::merge`).
#[napi(catch_unwind)]
pub fn store_merge(handle: u32, wall: f64, logical: f64, lww: bool, now: f64) -> Result<f64> {
    with_io(handle, |s, io| wire::merge(s, io, wall, logical, lww, now))
}

/// Expires the keys due by `now`.
#[napi(catch_unwind)]
pub fn store_tick(handle: u32, now: f64) -> Result<()> {
    mutate(handle, |s| {
        s.expire(now);
        Ok(())
    })
}

/// When the next key expires, or infinity.
#[napi(catch_unwind)]
pub fn store_next_deadline(handle: u32) -> Result<f64> {
    with(handle, |open| Ok(open.store.next_deadline()))
}

/// The latest revision.
#[napi(catch_unwind)]
pub fn store_revision(handle: u32) -> Result<f64> {
    with(handle, |open| Ok(open.store.revision() as f64))
}

/// The whole store as snapshot bytes.
#[napi(catch_unwind)]
pub fn store_export(handle: u32) -> Result<Buffer> {
    with(handle, |open| Ok(open.store.export().into()))
}

/// Replaces every key with a snapshot's.
#[napi(catch_unwind)]
pub fn store_import(handle: u32, bytes: Uint8ArraySlice<'_>) -> Result<()> {
    mutate(handle, |s| s.import(&bytes))
}

/// Hands the changes of this JS turn to the disk writer (call block: handle). A batched
/// durable store calls it once per turn, from a microtask.
#[napi(catch_unwind)]
pub fn store_submit() -> Result<()> {
    call_block::run(&CALL, closed, |handle, _| with(handle, Open::submit).map(|()| []))
}

/// The ticket of the last change queued for disk and of the last one on disk (0, 0 in
/// memory), into slots 0 and 1 of the call block (whose slot 0 holds the handle).
#[napi(catch_unwind)]
pub fn store_tickets() -> Result<()> {
    call_block::run(&CALL, closed, |handle, _| {
        with(handle, |open| {
            let (submitted, committed) = open.disk.as_ref().map_or((0, 0), |d| (d.submitted(), d.committed()));
            Ok([submitted as f64, committed as f64])
        })
    })
}

/// Why the disk failed, if it did.
#[napi(catch_unwind)]
pub fn store_disk_failure(handle: u32) -> Result<Option<String>> {
    with(handle, |open| Ok(open.disk.as_ref().and_then(|d| d.check().err()).map(|e| e.to_string())))
}
