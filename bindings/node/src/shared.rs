//! One core shared by every worker thread of a Node process. Each thread's `NativeBus` is an
//! endpoint of the same `Bus` behind a mutex (uncontended: about 20 ns a call), so a message
//! published on one thread reaches a subscriber on another without a structured clone. When a
//! call gives another thread's endpoint work, that thread is woken through a threadsafe
//! function. Only shared buses set wakers, and a waker keeps its thread alive until the JS side
//! clears it (on close), as an open subscription to a server would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use orrery_core::store::persist::PersistError;
use orrery_core::Bus;

use crate::bus_disk::{self, BusDisk};

/// Wakes one thread's endpoint: calls its JS flush from that thread's event loop.
pub type Waker = ThreadsafeFunction<(), (), (), Status, false, false, 0>;

/// A bus and the wakers of the threads attached to it.
pub struct Shared {
    bus: Mutex<Bus>,
    wakers: Mutex<HashMap<u32, Waker>>,
    /// Set once the bus is handed to another thread: only then are wakeups worth computing
    /// (they walk every endpoint, on every call).
    across_threads: AtomicBool,
    /// The durable transport's file, once opened (`bus_disk.rs`): every call's changes are
    /// staged for it under the bus's lock. `durable` is set with it, so a bus without one pays
    /// one atomic load a call.
    disk: bus_disk::Slot,
    durable: AtomicBool,
}

/// Live shared buses by handle, and the next handle to give out.
struct SharedBuses {
    next: u32,
    buses: HashMap<u32, Weak<Shared>>,
}

static SHARED_BUSES: LazyLock<Mutex<SharedBuses>> =
    LazyLock::new(|| Mutex::new(SharedBuses { next: 1, buses: HashMap::new() }));

/// Locks ignoring poison: a panic mid-call is caught at the boundary and reported as `PANIC`;
/// the bus stays usable (every mutation checks before it changes anything).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// A new shared bus and the handle other threads attach with.
    pub fn create(bus: Bus) -> (Arc<Self>, u32) {
        let shared = Arc::new(Self {
            bus: Mutex::new(bus),
            wakers: Mutex::new(HashMap::new()),
            across_threads: AtomicBool::new(false),
            disk: Mutex::new(None),
            durable: AtomicBool::new(false),
        });
        let mut table = lock(&SHARED_BUSES);
        table.buses.retain(|_, weak| weak.strong_count() > 0);
        let handle = table.next;
        table.next += 1;
        table.buses.insert(handle, Arc::downgrade(&shared));
        (shared, handle)
    }

    /// The shared bus behind `handle`, while some thread still holds it.
    pub fn find(handle: u32) -> Option<Arc<Self>> {
        lock(&SHARED_BUSES).buses.get(&handle).and_then(Weak::upgrade)
    }

    /// Runs `f` on the bus, then wakes every other endpoint that got work from it.
    pub fn with<R>(&self, own: u32, f: impl FnOnce(&mut Bus) -> R) -> R {
        if !self.across_threads.load(Ordering::Acquire) {
            let mut bus = lock(&self.bus);
            self.note_failure(&mut bus);
            let result = f(&mut bus);
            self.record(&mut bus);
            return result;
        }
        let (result, woken) = {
            let mut bus = lock(&self.bus);
            self.note_failure(&mut bus);
            let result = f(&mut bus);
            self.record(&mut bus);
            (result, bus.take_wakeups_except(own))
        };
        if woken.iter().any(|&ep| ep != own) {
            let wakers = lock(&self.wakers);
            for ep in woken.into_iter().filter(|&ep| ep != own) {
                if let Some(waker) = wakers.get(&ep) {
                    waker.call((), ThreadsafeFunctionCallMode::NonBlocking);
                }
            }
        }
        result
    }

    /// Stages what the call just made changed for the disk, if one is open.
    fn record(&self, bus: &mut Bus) {
        if self.durable.load(Ordering::Acquire) {
            if let Some(disk) = lock(&self.disk).as_mut() {
                disk.record(bus);
            }
        }
    }

    /// Tells the bus before a call if its disk failed since the last one: a publish to a durable
    /// channel is then refused in that very call, before anything is published.
    fn note_failure(&self, bus: &mut Bus) {
        if self.durable.load(Ordering::Acquire) {
            if let Some(disk) = lock(&self.disk).as_ref() {
                disk.note_failure(bus);
            }
        }
    }

    /// Opens the bus's disk with `open`, which reads it back into the bus; one per bus.
    pub fn open_disk(&self, open: impl FnOnce(&mut Bus) -> Result<BusDisk, PersistError>) -> Result<(), PersistError> {
        let mut bus = lock(&self.bus);
        let mut slot = lock(&self.disk);
        if slot.is_some() {
            return Err(PersistError::Io("this bus has its durable transport open already".to_owned()));
        }
        *slot = Some(open(&mut bus)?);
        self.durable.store(true, Ordering::Release);
        Ok(())
    }

    /// Runs `f` on the bus's disk; fails when none is open.
    pub fn with_disk<R>(&self, f: impl FnOnce(&mut BusDisk) -> R) -> crate::error::Result<R> {
        bus_disk::with_slot(&self.disk, f)
    }

    /// Marks the bus as used by several threads (its handle was shared, or a thread attached).
    pub fn mark_across_threads(&self) {
        self.across_threads.store(true, Ordering::Release);
    }

    /// Reads the bus without waking anyone.
    pub fn read<R>(&self, f: impl FnOnce(&Bus) -> R) -> R {
        f(&lock(&self.bus))
    }

    /// Sets (or, with `None`, clears) the waker of `endpoint`.
    pub fn set_waker(&self, endpoint: u32, waker: Option<Waker>) {
        let mut wakers = lock(&self.wakers);
        match waker {
            Some(w) => wakers.insert(endpoint, w),
            None => wakers.remove(&endpoint),
        };
    }

    /// Forgets `endpoint`'s waker and closes it (its thread is gone).
    pub fn detach(&self, endpoint: u32) {
        lock(&self.wakers).remove(&endpoint);
        if endpoint != orrery_core::MAIN_ENDPOINT {
            // Through `with`, so the threads that inherit its work (or room) are woken.
            // Dead letters it makes are stamped with the system's clock (the thread's is gone).
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64() * 1e3);
            let _ = self.with(endpoint, |bus| bus.close_endpoint(endpoint, now));
        }
    }
}
