//! The durable bus's disk: a redb file beside the in-memory bus, and one writer thread of its
//! own (redb allows one writer per file, and the store's file has its). Which rows a call
//! produces and how a reopen rebuilds the bus are the core's (`orrery_core::bus::persist`); the
//! group commit, tickets and first-failure rules are the store's (`Committer`, `Progress`),
//! shared as they are. This file is the engine and the JS calls.
//!
//! After every call on the bus, [`crate::shared::Shared`] hands the rows it changed to the
//! writer (a chunk at a time); at the end of each JS turn the facade asks for a commit
//! (`busDiskSubmit`), and a publish to a durable channel resolves once the listener reports a
//! committed ticket at or past the one read after the publish. A call that handed a durable
//! group's entry to a member commits at once and waits for it before it returns: the member's
//! handler runs only once that delivery is counted on disk, so a message that kills its process
//! is dead-lettered by a reopen after `maxDeliveries` crashes. Once the disk failed, the bus is
//! told, and refuses publishes to durable channels before anything is published.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use napi::bindgen_prelude::Function;
use napi_derive::napi;
use orrery_core::bus::persist::{recover, BusJournal};
use orrery_core::store::persist::{Batch, Committer, PersistError, Progress};
use orrery_core::{Bus, BusError, Coded};
use redb::TableDefinition;

use crate::bus::NativeBus;
use crate::disk::{open_redb, read_header, send, spawn_writer, Header, Listener, Listening, Redb, RowTable};
use crate::error::{to_js, Code, Result};

/// Every row of the bus (see `orrery_core::bus::persist` for the keys).
const ROWS: RowTable = TableDefinition::new("bus_rows");

/// Signalled by the writer after every commit (or failure), for a call waiting on one.
type Committed = Arc<(Mutex<()>, Condvar)>;

/// Opens (or creates) the bus file and reads it whole into `bus`. An empty file counts as absent:
/// a process killed while it created the file leaves one, and nothing was ever acknowledged from
/// it; a file without redb's header is refused (redb's `create` would wipe it).
fn open_checked(path: &str, bus: &mut Bus, now: f64) -> std::result::Result<Committer<Redb>, PersistError> {
    let exists = match read_header(path)? {
        Header::Absent | Header::Empty => false,
        Header::Redb => true,
        Header::Foreign(_) => {
            return Err(PersistError::Damaged(
                "it is not a bus file (no redb header); move it away to start empty".into(),
            ))
        }
    };
    open_redb(path, exists, ROWS, None, |mut engine| {
        recover(&mut engine, bus, now)?;
        Ok(Committer::new(engine, None))
    })
}

/// The open bus file's writer thread and the journal that feeds it.
pub struct BusDisk {
    sender: Option<Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
    journal: BusJournal,
    listener: Listening,
    committed: Committed,
}

impl BusDisk {
    /// Opens (or creates) the file at `path` and reads it into `bus` (fresh). A file that exists
    /// but does not check out is refused as damaged, never opened empty.
    fn open(path: &str, bus: &mut Bus, now: f64) -> std::result::Result<Self, PersistError> {
        let committer = open_checked(path, bus, now)?;
        let progress = Arc::new(Progress::new(path));
        let listener: Listening = Arc::default();
        let signal: Committed = Arc::default();
        let thread_signal = Arc::clone(&signal);
        let (sender, thread) = spawn_writer("orrery-bus-disk", committer, true, &progress, &listener, move || {
            let (lock, signal) = &*thread_signal;
            let _held = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            signal.notify_all();
        })?;
        let journal = BusJournal::new(progress);
        let mut disk = Self { sender: Some(sender), thread: Some(thread), journal, listener, committed: signal };
        // What the reopen changed (dead letters of spent entries, rows no group owes any more)
        // is committed at once.
        disk.record(bus);
        let _ = disk.submit();
        Ok(disk)
    }

    /// Hands the writer what the call just made changed; after a hand-over to a member of a
    /// durable group, commits and waits for the commit. A failed disk takes nothing more: its
    /// failure was recorded, and publishes waiting for a ticket are told by the listener.
    pub fn record(&mut self, bus: &mut Bus) {
        let sender = self.sender.as_ref();
        let _ = self.journal.record(bus, |batch| send(sender, batch));
        if self.journal.take_hand_over() && self.submit().is_ok() {
            self.wait_for(self.journal.submitted());
        }
        self.note_failure(bus);
    }

    /// Tells the bus once the disk failed, so it refuses publishes to durable channels (the
    /// host calls this before every call too: a failure the writer just met counts at once).
    pub fn note_failure(&self, bus: &mut Bus) {
        if let Err(err) = self.journal.check() {
            bus.disk_failed(&err.to_string());
        }
    }

    /// Blocks until `ticket` is committed, or the disk failed, or its writer is gone.
    fn wait_for(&self, ticket: u64) {
        let (lock, signal) = &*self.committed;
        let mut held = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while self.journal.committed() < ticket
            && self.journal.check().is_ok()
            && self.thread.as_ref().is_some_and(|t| !t.is_finished())
        {
            held = match signal.wait_timeout(held, Duration::from_millis(100)) {
                Ok((held, _)) => held,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn submit(&mut self) -> std::result::Result<(), PersistError> {
        let sender = self.sender.as_ref();
        self.journal.submit(|batch| send(sender, batch))
    }

    fn set_listener(&self, listener: Option<Listener>) {
        if let Ok(mut slot) = self.listener.lock() {
            *slot = listener;
        }
    }

    /// Commits what is staged, waits for the writer to finish, and stops it.
    fn close(&mut self) {
        let _ = self.submit();
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.set_listener(None);
    }
}

impl Drop for BusDisk {
    fn drop(&mut self) {
        self.close();
    }
}

#[allow(clippy::needless_pass_by_value, reason = "shaped for map_err")]
fn disk_error(path: &str, err: PersistError) -> napi::Error<Code> {
    let message = match std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => format!(
            "cannot open the bus file {path:?}: its directory {} does not exist; create it first ({err})",
            dir.display()
        ),
        _ => format!("cannot open the bus file {path:?}: {err}"),
    };
    napi::Error::new(Code(err.code()), message)
}

fn no_disk() -> napi::Error<Code> {
    to_js(BusError::InvalidOption { option: "transports", reason: "no durable transport is open on this bus" })
}

#[napi]
impl NativeBus {
    /// Opens the durable transport's file at `path` and reads every durable channel back into
    /// this bus (before any channel is used); one per bus.
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi passes owned strings")]
    pub fn open_disk(&self, path: String, now: Option<f64>) -> Result<()> {
        let shared = self.core()?;
        // Dead letters the reopen makes are stamped `now` (the host clock; the system's if not given).
        let now = now.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        });
        shared.open_disk(|bus| BusDisk::open(&path, bus, now)).map_err(|err| disk_error(&path, err))
    }

    /// Keeps `channel` (and its dead-letter channel) on disk from now on; before its first use.
    #[napi(catch_unwind)]
    pub fn make_durable(&self, channel: u32) -> Result<()> {
        self.core()?.with(self.endpoint(), |bus| bus.make_durable(channel)).map_err(to_js)
    }

    /// Whether `channel` is kept on disk (bound to the durable transport, or read back from its file).
    #[napi(catch_unwind)]
    pub fn is_durable(&self, channel: u32) -> Result<bool> {
        Ok(self.core()?.read(|bus| bus.is_durable(channel)))
    }

    /// Asks the writer to commit what this turn changed.
    #[napi(catch_unwind)]
    pub fn disk_submit(&self) -> Result<()> {
        self.core()?.with_disk(|disk| disk.submit().map_err(|e| napi::Error::new(Code(e.code()), e.to_string())))?
    }

    /// Commits what is staged and waits for it (the bus closes: its last publishes settle as
    /// they landed).
    #[napi(catch_unwind)]
    pub fn disk_flush(&self) -> Result<()> {
        self.core()?.with_disk(|disk| {
            if disk.submit().is_ok() {
                disk.wait_for(disk.journal.submitted());
            }
        })
    }

    /// `[ticket acknowledging every change so far, last ticket on disk]`, or `[-1, -1]` once the
    /// disk failed.
    #[napi(catch_unwind)]
    pub fn disk_tickets(&self) -> Result<Vec<f64>> {
        self.core()?.with_disk(|disk| {
            if disk.journal.check().is_err() {
                return vec![-1.0, -1.0];
            }
            vec![disk.journal.submitted() as f64, disk.journal.committed() as f64]
        })
    }

    /// Why the disk failed, if it did.
    #[napi(catch_unwind)]
    pub fn disk_failure(&self) -> Result<Option<String>> {
        self.core()?.with_disk(|disk| disk.journal.check().err().map(|e| e.to_string()))
    }

    /// Sets the function called on this thread with each committed ticket (-1 on a failed
    /// commit); while set it keeps Node running. `null` clears it.
    #[napi(catch_unwind)]
    pub fn set_disk_listener(&self, listener: Option<Function<f64, ()>>) -> Result<()> {
        let listener: Option<Listener> = match listener {
            None => None,
            Some(f) => Some(f.build_threadsafe_function::<f64>().callee_handled::<false>().build().map_err(|_| {
                to_js(BusError::InvalidOption {
                    option: "listener",
                    reason: "cannot create a threadsafe function from it",
                })
            })?),
        };
        self.core()?.with_disk(|disk| disk.set_listener(listener))
    }
}

/// The disk of a shared bus, kept beside it (see `shared.rs`).
pub type Slot = Mutex<Option<BusDisk>>;

/// Runs `f` on the disk in `slot`, or fails: no durable transport is open.
pub fn with_slot<R>(slot: &Slot, f: impl FnOnce(&mut BusDisk) -> R) -> Result<R> {
    let mut disk = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    disk.as_mut().map(f).ok_or_else(no_disk)
}
