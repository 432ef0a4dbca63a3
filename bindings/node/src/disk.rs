//! The durable store's disk: a redb database beside the in-memory core, and one writer thread
//! that commits changed keys and tells JS when a commit is on disk.
//!
//! Why redb: pure Rust (nothing to compile in C, nothing that could differ between machines),
//! ACID with crash-safe commits (a checksummed commit that fsyncs before returning, with
//! `Durability::Immediate`), a stable file format, and a copy-on-write B-tree that reopens
//! cleanly after a SIGKILL without a recovery log of ours.
//!
//! Durability settings: `every` commits each write on its own; `batched` (group commit) puts
//! every write that arrived while the previous commit was syncing into the next one. Either way
//! a write's promise resolves only after the commit holding it returned from fsync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use orrery_core::store::{Bytes, EntryState, Meta};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Keys: namespace name, a 0 byte, the key. Values: the key's records ([`EntryState`]).
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// The store's revision, clock, writers and namespaces ([`Meta`]) under `"store"`.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Called on the JS thread with the highest committed ticket, or -1 after a failed commit.
pub type Listener = ThreadsafeFunction<f64, (), f64, Status, false, false, 0>;

/// One write's changes, in order.
pub struct Batch {
    /// Increases by one per batch.
    pub ticket: u64,
    /// (row key, new row or `None` to remove it)
    pub rows: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The store's meta after the write.
    pub meta: Vec<u8>,
}

#[derive(Default)]
struct Status_ {
    committed: AtomicU64,
    failure: Mutex<Option<String>>,
    listener: Mutex<Option<Listener>>,
}

/// The open database and its writer thread.
pub struct Disk {
    sender: Option<Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Status_>,
    submitted: u64,
}

/// What a database held when it was opened.
pub struct Loaded {
    /// The store's meta, if it was ever written.
    pub meta: Option<Meta>,
    /// Every key: (namespace name, key, state).
    pub entries: Vec<(String, Bytes, EntryState)>,
}

/// The row key of a namespace's key.
#[must_use]
pub fn row_key(namespace: &str, key: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(namespace.len() + 1 + key.len());
    row.extend_from_slice(namespace.as_bytes());
    row.push(0);
    row.extend_from_slice(key);
    row
}

fn io(err: impl std::fmt::Display) -> String {
    err.to_string()
}

impl Disk {
    /// Opens (or creates) the database at `path` and reads everything in it.
    pub fn open(path: &str, batched: bool) -> Result<(Self, Loaded), String> {
        let db = Database::create(path).map_err(io)?;
        // Create both tables, so a fresh file reads as empty rather than failing.
        let txn = db.begin_write().map_err(io)?;
        txn.open_table(ENTRIES).map_err(io)?;
        txn.open_table(META).map_err(io)?;
        txn.commit().map_err(io)?;

        let read = db.begin_read().map_err(io)?;
        let meta = match read.open_table(META).map_err(io)?.get("store").map_err(io)? {
            Some(bytes) => Some(Meta::from_bytes(bytes.value()).map_err(io)?),
            None => None,
        };
        let mut entries = Vec::new();
        for row in read.open_table(ENTRIES).map_err(io)?.iter().map_err(io)? {
            let (key, value) = row.map_err(io)?;
            let key = key.value();
            let split = key.iter().position(|&b| b == 0).ok_or("a row key without a namespace")?;
            let namespace = String::from_utf8(key[..split].to_vec()).map_err(io)?;
            let state = EntryState::from_bytes(value.value()).map_err(io)?;
            entries.push((namespace, Bytes::copy_from_slice(&key[split + 1..]), state));
        }
        drop(read);

        let status = Arc::new(Status_::default());
        let (sender, receiver) = channel();
        let thread_status = Arc::clone(&status);
        let thread = std::thread::Builder::new()
            .name("orrery-store-disk".into())
            .spawn(move || commit_loop(&db, &receiver, batched, &thread_status))
            .map_err(io)?;
        Ok((Self { sender: Some(sender), thread: Some(thread), status, submitted: 0 }, Loaded { meta, entries }))
    }

    /// Queues a batch; returns its ticket. Fails once a commit has failed.
    pub fn submit(&mut self, rows: Vec<(Vec<u8>, Option<Vec<u8>>)>, meta: Vec<u8>) -> Result<u64, String> {
        self.check()?;
        self.submitted += 1;
        let batch = Batch { ticket: self.submitted, rows, meta };
        let sender = self.sender.as_ref().ok_or("the store is closed")?;
        sender.send(batch).map_err(|_| "the disk writer has stopped".to_owned())?;
        Ok(self.submitted)
    }

    /// The failure that stopped the disk, if any.
    pub fn check(&self) -> Result<(), String> {
        match self.status.failure.lock().map(|f| f.clone()) {
            Ok(None) => Ok(()),
            Ok(Some(reason)) => Err(reason),
            Err(_) => Err("the disk writer panicked".into()),
        }
    }

    /// The ticket of the last batch queued.
    #[must_use]
    pub fn submitted(&self) -> u64 {
        self.submitted
    }

    /// The ticket of the last batch on disk.
    #[must_use]
    pub fn committed(&self) -> u64 {
        self.status.committed.load(Ordering::Acquire)
    }

    /// Sets (or clears) the function told about commits; while set it keeps Node running.
    pub fn set_listener(&self, listener: Option<Listener>) {
        if let Ok(mut slot) = self.status.listener.lock() {
            *slot = listener;
        }
    }

    /// Waits for every queued batch to be committed, then stops the writer.
    pub fn close(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.set_listener(None);
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.close();
    }
}

fn commit_loop(db: &Database, receiver: &Receiver<Batch>, batched: bool, status: &Status_) {
    while let Ok(first) = receiver.recv() {
        let mut batches = vec![first];
        if batched {
            batches.extend(receiver.try_iter());
        }
        let ticket = batches.last().map_or(0, |b| b.ticket);
        let outcome = commit(db, &batches);
        match outcome {
            Ok(()) => status.committed.store(ticket, Ordering::Release),
            Err(reason) => {
                if let Ok(mut failure) = status.failure.lock() {
                    *failure = Some(reason);
                }
            }
        }
        if let Ok(listener) = status.listener.lock() {
            if let Some(listener) = listener.as_ref() {
                let told = if outcome_ok(status) { ticket as f64 } else { -1.0 };
                listener.call(told, ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
        if !outcome_ok(status) {
            return;
        }
    }
}

fn outcome_ok(status: &Status_) -> bool {
    status.failure.lock().is_ok_and(|f| f.is_none())
}

fn commit(db: &Database, batches: &[Batch]) -> Result<(), String> {
    let txn = db.begin_write().map_err(io)?;
    {
        let mut entries = txn.open_table(ENTRIES).map_err(io)?;
        for batch in batches {
            for (key, row) in &batch.rows {
                match row {
                    Some(value) => entries.insert(key.as_slice(), value.as_slice()).map(|_| ()),
                    None => entries.remove(key.as_slice()).map(|_| ()),
                }
                .map_err(io)?;
            }
        }
        if let Some(last) = batches.last() {
            txn.open_table(META).map_err(io)?.insert("store", last.meta.as_slice()).map_err(io)?;
        }
    }
    txn.commit().map_err(io)
}
