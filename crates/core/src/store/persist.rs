//! Keeping a store on disk: the rules of durability, apart from any engine that keeps the bytes.
//!
//! An engine ([`Persistence`]) only stores rows and a meta row and commits them all or nothing.
//! What must reach it, in which order, and when a write counts as acknowledged is decided here,
//! so every engine (redb in the N-API binding today, the durable bus backend and workflow
//! history next) keeps the same promises, tested once against [`Memory`]:
//!
//! - **Rows.** One row per key: its namespace's name, a 0 byte and the key, holding the key's
//!   records ([`Store::encode_entry`]); a key that no longer exists is removed. A call's rows
//!   (a whole transaction's) travel together, so no commit can hold part of one.
//! - **Meta first.** The store's meta row (revision, clock, writers, namespaces and their floors)
//!   is handed over before any row that needs it (a new writer's, a new namespace's), and every
//!   commit rewrites it with the revision and clock of the last rows it holds.
//! - **Tickets.** Each commit request carries the next ticket; a write is acknowledged by the
//!   ticket of the first commit requested after it, once that commit returned (from fsync).
//!   Requests that queue up while a commit runs share the next one (group commit).
//! - **Reopen.** The meta row, then every row, decoded and checked whole before anything is
//!   loaded; rows without a meta row, rows newer than it, or bytes that do not decode are a
//!   damaged file, refused rather than opened empty or partial.
//! - **Failure.** The first failed commit (or write) fails the engine for good: it is reported
//!   once, acknowledges nothing more, and every later call is refused before it changes the
//!   store, naming the file and the first failure.

mod committer;
mod journal;
mod memory;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

pub use committer::Committer;
pub use journal::Journal;
pub use memory::{Durable, Faults, Memory};

use super::{Bytes, EntryState, Hlc, Meta, Store};
use crate::error::{Coded, StoreError};

/// What keeps a store's rows: a file engine, or [`Memory`] in tests. It needs no ordering rules
/// of its own; it must only make a commit all or nothing, and durable before it returns.
pub trait Persistence {
    /// The meta row, if one was ever committed.
    ///
    /// # Errors
    /// The engine's, when it cannot read.
    fn read_meta(&mut self) -> Result<Option<Vec<u8>>, PersistError>;

    /// Every committed row (key, value), in any order.
    ///
    /// # Errors
    /// The engine's, or the first error of `each`.
    fn read_rows(&mut self, each: &mut RowVisitor<'_>) -> Result<(), PersistError>;

    /// Puts, replaces or removes rows in the commit being built, in order (a chunk at a time:
    /// an engine opens its table once for all of them).
    ///
    /// # Errors
    /// The engine's; it fails the engine.
    fn write_rows(&mut self, rows: &[Row<'_>]) -> Result<(), PersistError>;

    /// Replaces the meta row in the commit being built.
    ///
    /// # Errors
    /// The engine's; it fails the engine.
    fn put_meta(&mut self, meta: &[u8]) -> Result<(), PersistError>;

    /// Makes every row and the meta put since the last commit durable together, or none of them,
    /// returning only once they are.
    ///
    /// # Errors
    /// The engine's; nothing of this commit may be durable then.
    fn commit(&mut self) -> Result<(), PersistError>;
}

/// What [`Persistence::read_rows`] hands each row to (key, value).
pub type RowVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), PersistError> + 'a;

/// One row to write: its key, and its value, or `None` when the row is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    /// The row's key (namespace name, a 0 byte, the key).
    pub key: &'a [u8],
    /// The key's records, or `None`: the key is gone.
    pub value: Option<&'a [u8]>,
}

/// Why a durable store's disk failed or its file was refused. Every one reaches JS as
/// `STORE_IO`; the message says which, and a damaged file says so in words
/// (`the file is damaged`), which the host shows as `details.damaged`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// The file exists but is not an intact store: refused, never opened as an empty one.
    #[error("the file is damaged: {0}")]
    Damaged(String),
    /// The engine could not read or write (a full disk, a missing directory, a lock held).
    #[error("{0}")]
    Io(String),
    /// A call after the store's disk was closed.
    #[error("the store is closed")]
    Closed,
    /// The engine's writer is gone (it failed, and its failure was recorded first).
    #[error("the disk writer has stopped")]
    Stopped,
    /// The engine's writer panicked.
    #[error("the disk writer panicked")]
    Panicked,
    /// The first failure of the engine behind a file; every later call is refused with it.
    #[error("{path:?}: {cause}")]
    Failed {
        /// The file: a process may hold several stores.
        path: String,
        /// What failed first.
        #[source]
        cause: Box<PersistError>,
    },
}

impl Coded for PersistError {
    fn code(&self) -> &'static str {
        "STORE_IO"
    }
}

impl From<PersistError> for StoreError {
    fn from(err: PersistError) -> Self {
        StoreError::Io { reason: err.to_string() }
    }
}

/// Where a store's rows stand, shared by the thread that writes them and the one that acks.
#[derive(Debug)]
pub struct Progress {
    path: String,
    committed: AtomicU64,
    /// Set with `failure`: checked on every call, so a healthy disk costs no lock.
    failed: AtomicBool,
    failure: Mutex<Option<PersistError>>,
}

/// What a host tells JS after a failed commit, where a ticket would go.
pub const FAILED_TICKET: f64 = -1.0;

impl Progress {
    /// Nothing committed yet, for the file at `path`.
    #[must_use]
    pub fn new(path: &str) -> Self {
        Self {
            path: path.to_owned(),
            committed: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    /// The ticket of the last commit that returned.
    #[must_use]
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The failure that stopped the disk, if any, naming the file.
    ///
    /// # Errors
    /// [`PersistError::Failed`] once the engine failed.
    pub fn check(&self) -> Result<(), PersistError> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.failure.lock() {
            Ok(failure) => failure.clone().map_or(Ok(()), Err),
            Err(_) => Err(self.failed_with(PersistError::Panicked)),
        }
    }

    /// Records a commit, or the engine's failure (only the first one counts); returns what to
    /// tell the host: the ticket, or [`FAILED_TICKET`].
    pub fn record(&self, outcome: Result<u64, PersistError>) -> f64 {
        match outcome {
            Ok(ticket) => {
                self.committed.fetch_max(ticket, Ordering::AcqRel);
                ticket as f64
            }
            Err(cause) => {
                if let Ok(mut failure) = self.failure.lock() {
                    failure.get_or_insert_with(|| self.failed_with(cause));
                }
                self.failed.store(true, Ordering::Release);
                FAILED_TICKET
            }
        }
    }

    fn failed_with(&self, cause: PersistError) -> PersistError {
        PersistError::Failed { path: self.path.clone(), cause: Box::new(cause) }
    }
}

/// Revisions and clocks only move forward, whatever order they are learnt in.
#[derive(Debug, Clone, Copy, Default)]
struct Stamp {
    revision: u64,
    clock: Hlc,
}

impl Stamp {
    fn advance(&mut self, revision: u64, clock: Hlc) {
        self.revision = self.revision.max(revision);
        self.clock = self.clock.max(clock);
    }
}

/// What the writing side hands an engine's writer, in order.
#[derive(Debug)]
pub enum Batch {
    /// Rows for the open commit, framed back to back in one buffer (key length u32 LE, key,
    /// value length u32 LE or [`REMOVED`], value): a chunk is one allocation, not two per row.
    Rows {
        /// The framed rows.
        rows: Vec<u8>,
        /// The store's revision after the last of them.
        revision: u64,
        /// The store's clock after the last of them.
        clock: Hlc,
    },
    /// The store's meta changed (writers, namespaces, their floors or history limits).
    Meta(Meta),
    /// Commit what was handed over; this acknowledges `ticket`.
    Commit {
        /// The ticket the commit acknowledges.
        ticket: u64,
    },
}

/// Marks a removed row where a value length would be.
pub const REMOVED: u32 = u32::MAX;

/// The row key of a namespace's key: its name, a 0 byte (never in a name), the key.
fn row_key(out: &mut Vec<u8>, namespace: &str, key: &[u8]) {
    out.extend_from_slice(namespace.as_bytes());
    out.push(0);
    out.extend_from_slice(key);
}

/// Reads a store back from `engine` into `store` (fresh), which then records its changes for
/// a [`Journal`]. Returns the meta read, which seeds the engine's [`Committer`].
///
/// # Errors
/// [`PersistError::Damaged`] for anything that does not decode or check out; the engine's own
/// errors as they are.
pub fn recover<P: Persistence + ?Sized>(engine: &mut P, store: &mut Store) -> Result<Option<Meta>, PersistError> {
    let meta = match engine.read_meta()? {
        Some(bytes) => Some(Meta::from_bytes(&bytes).map_err(|e| damaged(format!("its store record {e}")))?),
        None => None,
    };
    let mut entries = Vec::new();
    engine.read_rows(&mut |key, value| {
        let split = key.iter().position(|&b| b == 0).ok_or_else(|| damaged("a row key without a namespace"))?;
        let namespace = std::str::from_utf8(&key[..split]).map_err(|e| damaged(e.to_string()))?;
        let state = EntryState::from_bytes(value).map_err(|e| damaged(format!("a row {e}")))?;
        entries.push((namespace.to_owned(), Bytes::copy_from_slice(&key[split + 1..]), state));
        Ok(())
    })?;
    match &meta {
        Some(meta) => {
            // Rows that decode but do not check out (a name, a key, versions out of order) are a
            // damaged file too, not a caller's bad argument.
            store.load(meta, entries).map_err(|e| damaged(e.to_string()))?;
            // Every commit writes the meta with the revision of its last rows, so a row newer
            // than the meta is a commit that did not land whole.
            if store.revision() != meta.revision() {
                return Err(damaged(format!(
                    "a row has version {} but the store's meta record says revision {}: a commit did not land whole",
                    store.revision(),
                    meta.revision()
                )));
            }
        }
        None if !entries.is_empty() => return Err(damaged("keys without the store's meta record")),
        None => {}
    }
    store.track_changes();
    Ok(meta)
}

fn damaged(reason: impl Into<String>) -> PersistError {
    PersistError::Damaged(reason.into())
}
