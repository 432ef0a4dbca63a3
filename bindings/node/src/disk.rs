//! The durable store's disk: a redb database beside the in-memory core, and one writer thread
//! that commits changed keys and tells JS when a commit is on disk.
//!
//! Why redb: pure Rust (nothing to compile in C, nothing that could differ between machines),
//! ACID with crash-safe commits (a checksummed commit that fsyncs before returning, with
//! `Durability::Immediate`), a stable file format, and a copy-on-write B-tree that reopens
//! cleanly after a SIGKILL without a recovery log of ours.
//!
//! Durability settings: `every` commits each write on its own. `batched` (group commit) commits
//! the writes of one turn of the JS event loop together: rows stream to the writer thread in
//! chunks as they are written (so its inserts overlap the JS work on the other core), and when
//! the turn ends JS asks for the commit (`store_submit`, from a microtask). Commit requests
//! that queue up while the previous commit syncs go into one commit. Either way a write's
//! promise resolves only after the commit holding it returned from fsync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use orrery_core::store::{Bytes, EntryState, Hlc, Meta};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

/// Keys: namespace name, a 0 byte, the key. Values: the key's records ([`EntryState`]).
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// The store's revision, clock, writers and namespaces ([`Meta`]) under `"store"`.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Called on the JS thread with the highest committed ticket, or -1 after a failed commit.
pub type Listener = ThreadsafeFunction<f64, (), f64, Status, false, false, 0>;

/// Rows staged before they go to the writer: a chunk per wake-up of its thread, not a row.
const CHUNK_ROWS: usize = 128;

/// At most this many messages are taken in once a commit is due (group commit).
const GATHER_LIMIT: usize = 256;

/// Marks a removed row where a value length would be.
const REMOVED: u32 = u32::MAX;

/// What the writer thread is told.
enum Message {
    /// Rows to write, in order, into the open transaction: framed back to back in one buffer
    /// (key length u32, key, value length u32 or `REMOVED`, value), so a chunk is one
    /// allocation made on the JS thread and freed on the writer's, not two per row.
    Rows {
        rows: Vec<u8>,
        /// The store's revision and clock after the last of them.
        revision: u64,
        clock: Hlc,
    },
    /// The store's meta changed (writers, namespaces, their floors or history limits). Sent
    /// before the rows that follow it, so no commit holds a row its meta does not explain.
    Meta(Meta),
    /// Commit what was written; this acknowledges `ticket`.
    Commit { ticket: u64 },
}

#[derive(Default)]
struct Status_ {
    /// The file, named in every failure: a process may hold several stores.
    path: String,
    committed: AtomicU64,
    failure: Mutex<Option<String>>,
    listener: Mutex<Option<Listener>>,
}

/// The open database and its writer thread.
pub struct Disk {
    sender: Option<Sender<Message>>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Status_>,
    submitted: u64,
    batched: bool,
    staged: Vec<u8>,
    staged_rows: usize,
    /// The store's revision and clock after the last staged change.
    revision: u64,
    clock: Hlc,
    /// Rows staged or sent since the last commit request.
    uncommitted: bool,
}

/// What a database held when it was opened.
pub struct Loaded {
    /// The store's meta, if it was ever written.
    pub meta: Option<Meta>,
    /// Every key: (namespace name, key, state).
    pub entries: Vec<(String, Bytes, EntryState)>,
}

fn io(err: impl std::fmt::Display) -> String {
    err.to_string()
}

/// The first bytes of every redb file (its magic number): a file without them was never one.
const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Starts every reason that a file is damaged, so JS and the reader can tell it from a full
/// disk or a missing directory.
const DAMAGED: &str = "the file is damaged";

/// redb's errors, with corruption said in words: its `Corrupted` is a damaged file.
fn db_error(err: impl Into<redb::Error>) -> String {
    match err.into() {
        redb::Error::Corrupted(reason) => {
            format!("{DAMAGED} ({reason}); restore it from a backup or move it away to start empty")
        }
        redb::Error::DatabaseAlreadyOpen => "the file is open already (in this or another process)".to_owned(),
        other => other.to_string(),
    }
}

/// Why an existing file is not a store file, if it is not: redb's `create` would initialise an
/// empty file as a new database, and acknowledged writes would be gone without a word.
fn check_header(path: &str) -> Result<bool, String> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err.to_string()),
    };
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Err(format!("{DAMAGED}: it is empty (0 bytes; a store file never is), so what it held is lost; move it away to start empty"));
    }
    let mut head = [0u8; MAGIC.len()];
    if file.read_exact(&mut head).is_err() || head != MAGIC {
        return Err(format!(
            "{DAMAGED}: it is not a store file (no store header in its {len} bytes); move it away to start empty"
        ));
    }
    Ok(true)
}

/// Opens the file and reads it whole. redb may panic on pages damaged outside it (a plain open
/// trusts a cleanly closed file), so the open checks every page's checksum, and both the open and
/// the read-back run under `catch_unwind`: a panic there is a damaged file, reported as such.
#[allow(clippy::type_complexity, reason = "one private call site")]
fn open_checked(path: &str) -> Result<(Database, Option<Meta>, Vec<(String, Bytes, EntryState)>), String> {
    let exists = check_header(path)?;
    let read = std::panic::AssertUnwindSafe(|| -> Result<_, String> {
        let mut builder = Database::builder();
        builder.set_check_integrity_on_open(true);
        let db = if exists { builder.open(path) } else { builder.create(path) }.map_err(db_error)?;
        // Create both tables, so a fresh file reads as empty rather than failing.
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(ENTRIES).map_err(db_error)?;
        txn.open_table(META).map_err(db_error)?;
        txn.commit().map_err(db_error)?;

        let read = db.begin_read().map_err(db_error)?;
        let meta = match read.open_table(META).map_err(db_error)?.get("store").map_err(db_error)? {
            Some(bytes) => {
                Some(Meta::from_bytes(bytes.value()).map_err(|e| format!("{DAMAGED}: its store record {e}"))?)
            }
            None => None,
        };
        let mut entries = Vec::new();
        for row in read.open_table(ENTRIES).map_err(db_error)?.iter().map_err(db_error)? {
            let (key, value) = row.map_err(db_error)?;
            let key = key.value();
            let split =
                key.iter().position(|&b| b == 0).ok_or_else(|| format!("{DAMAGED}: a row key without a namespace"))?;
            let namespace = String::from_utf8(key[..split].to_vec()).map_err(|e| format!("{DAMAGED}: {e}"))?;
            let state = EntryState::from_bytes(value.value()).map_err(|e| format!("{DAMAGED}: a row {e}"))?;
            entries.push((namespace, Bytes::copy_from_slice(&key[split + 1..]), state));
        }
        drop(read);
        Ok((db, meta, entries))
    });
    match std::panic::catch_unwind(read) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            Err(format!(
                "{DAMAGED} (reading it failed: {what}); restore it from a backup or move it away to start empty"
            ))
        }
    }
}

impl Disk {
    /// Opens (or creates) the database at `path` and reads everything in it. A file that exists
    /// but is not an intact store (empty, truncated, overwritten, pages that fail their
    /// checksums) is refused as damaged, never opened as an empty store: only a path where no
    /// file exists creates a new one.
    pub fn open(path: &str, batched: bool) -> Result<(Self, Loaded), String> {
        let (db, meta, entries) = open_checked(path)?;
        let meta_seed = meta.clone();

        let status = Arc::new(Status_ { path: path.to_owned(), ..Status_::default() });
        let (sender, receiver) = channel();
        let thread_status = Arc::clone(&status);
        let thread = std::thread::Builder::new()
            .name("orrery-store-disk".into())
            .spawn(move || {
                // A panic in the writer must not leave writes waiting forever: it fails the disk.
                let run =
                    std::panic::AssertUnwindSafe(|| commit_loop(&db, &receiver, batched, &thread_status, meta_seed));
                if std::panic::catch_unwind(run).is_err() {
                    report(&thread_status, Err("the disk writer panicked".into()));
                }
            })
            .map_err(io)?;
        let disk = Self {
            sender: Some(sender),
            thread: Some(thread),
            status,
            submitted: 0,
            batched,
            staged: Vec::new(),
            staged_rows: 0,
            revision: 0,
            clock: Hlc::default(),
            uncommitted: false,
        };
        Ok((disk, Loaded { meta, entries }))
    }

    /// Adds the row of a namespace's key to the next commit: `encode` appends its value, or
    /// returns `false` when the key is gone (the row is removed). Rows go to the writer a chunk
    /// at a time.
    pub fn stage(
        &mut self,
        namespace: &str,
        key: &[u8],
        encode: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> Result<(), String> {
        self.check()?;
        self.uncommitted = true;
        let row_key = namespace.len() + 1 + key.len();
        self.staged.extend_from_slice(&(row_key as u32).to_le_bytes());
        self.staged.extend_from_slice(namespace.as_bytes());
        self.staged.push(0);
        self.staged.extend_from_slice(key);
        let length_at = self.staged.len();
        self.staged.extend_from_slice(&REMOVED.to_le_bytes());
        if encode(&mut self.staged) {
            let value = (self.staged.len() - length_at - 4) as u32;
            self.staged[length_at..length_at + 4].copy_from_slice(&value.to_le_bytes());
        }
        self.staged_rows += 1;
        Ok(())
    }

    /// Hands the staged rows to the writer once they fill a chunk. Called between calls only:
    /// a call's rows (a whole transaction's) travel together, so no commit can hold part of one.
    pub fn send_full_chunk(&mut self) -> Result<(), String> {
        if self.staged_rows >= CHUNK_ROWS {
            self.send_staged()?;
        }
        Ok(())
    }

    /// Whether each change commits on its own (`every`) rather than with its JS turn's.
    #[must_use]
    pub fn commits_each(&self) -> bool {
        !self.batched
    }

    /// Notes the store's revision and clock after the changes just staged.
    pub fn note(&mut self, revision: u64, clock: Hlc) {
        self.revision = revision;
        self.clock = clock;
    }

    /// Hands the writer the store's new meta, after the rows staged before the change.
    pub fn send_meta(&mut self, meta: Meta) -> Result<(), String> {
        self.check()?;
        self.uncommitted = true;
        if !self.staged.is_empty() {
            self.send_staged()?;
        }
        self.send(Message::Meta(meta))
    }

    fn send_staged(&mut self) -> Result<(), String> {
        self.staged_rows = 0;
        let rows = std::mem::take(&mut self.staged);
        self.send(Message::Rows { rows, revision: self.revision, clock: self.clock })
    }

    /// Whether changes wait for a commit request.
    #[must_use]
    pub fn has_uncommitted(&self) -> bool {
        self.uncommitted
    }

    /// Asks the writer to commit everything so far (a no-op when nothing changed). Fails once a
    /// commit has failed.
    pub fn submit(&mut self) -> Result<(), String> {
        self.check()?;
        if !self.uncommitted {
            return Ok(());
        }
        if !self.staged.is_empty() {
            self.send_staged()?;
        }
        self.submitted += 1;
        self.uncommitted = false;
        self.send(Message::Commit { ticket: self.submitted })
    }

    fn send(&self, message: Message) -> Result<(), String> {
        let sender = self.sender.as_ref().ok_or("the store is closed")?;
        sender.send(message).map_err(|_| "the disk writer has stopped".to_owned())
    }

    /// The failure that stopped the disk, if any.
    pub fn check(&self) -> Result<(), String> {
        match self.status.failure.lock().map(|f| f.clone()) {
            Ok(None) => Ok(()),
            Ok(Some(reason)) => Err(reason),
            Err(_) => Err("the disk writer panicked".into()),
        }
    }

    /// The ticket that acknowledges every change so far: the last commit requested, or the
    /// next one if changes came after it.
    #[must_use]
    pub fn submitted(&self) -> u64 {
        self.submitted + u64::from(self.uncommitted)
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

/// What the writer thread keeps between messages.
struct Writer<'a> {
    db: &'a Database,
    txn: Option<WriteTransaction>,
    meta: Option<Meta>,
    /// A meta change not committed yet.
    meta_changed: bool,
    /// The store's revision and clock after the last rows written.
    revision: u64,
    clock: Hlc,
}

/// The writer thread: writes rows into an open transaction as they come, and commits when
/// asked, after taking in whatever else is already queued (group commit).
fn commit_loop(db: &Database, receiver: &Receiver<Message>, batched: bool, status: &Status_, meta: Option<Meta>) {
    let (revision, clock) = meta.as_ref().map_or((0, Hlc::default()), |m| (m.revision(), m.clock()));
    let mut writer = Writer { db, txn: None, meta, meta_changed: false, revision, clock };
    // The highest commit request not yet done.
    let mut requested: Option<u64> = None;
    // Messages taken in since a commit became due: bounded, so a steady stream of writes
    // cannot put the commit off forever.
    let mut gathered = 0;
    loop {
        let message = match (requested.is_some(), batched) {
            // A commit is due: with group commit, take in what already queued up first.
            (true, true) if gathered < GATHER_LIMIT => receiver.try_recv().ok(),
            (true, _) => None,
            (false, _) => receiver.recv().ok(),
        };
        if requested.is_some() {
            gathered += 1;
        }
        let outcome = match message {
            Some(Message::Rows { rows, revision, clock }) => {
                writer.advance(revision, clock);
                writer.write_rows(&rows)
            }
            Some(Message::Meta(meta)) => {
                writer.advance(meta.revision(), meta.clock());
                writer.meta = Some(meta);
                writer.meta_changed = true;
                Ok(())
            }
            Some(Message::Commit { ticket }) => {
                requested = Some(ticket);
                Ok(())
            }
            None => {
                let Some(ticket) = requested.take() else { return };
                gathered = 0;
                match writer.commit() {
                    Ok(()) => {
                        report(status, Ok(ticket));
                        Ok(())
                    }
                    Err(reason) => Err(reason),
                }
            }
        };
        if let Err(reason) = outcome {
            report(status, Err(reason));
            return;
        }
    }
}

impl Writer<'_> {
    /// Revisions and clocks only move forward, whatever order they are learnt in.
    fn advance(&mut self, revision: u64, clock: Hlc) {
        self.revision = self.revision.max(revision);
        self.clock = self.clock.max(clock);
    }

    fn txn(&mut self) -> Result<&WriteTransaction, String> {
        if self.txn.is_none() {
            self.txn = Some(self.db.begin_write().map_err(io)?);
        }
        self.txn.as_ref().ok_or_else(|| "no write transaction".to_owned())
    }

    fn write_rows(&mut self, rows: &[u8]) -> Result<(), String> {
        let mut entries = self.txn()?.open_table(ENTRIES).map_err(io)?;
        let mut frames = Frames { rows, at: 0 };
        while frames.at < rows.len() {
            let key_len = frames.word()? as usize;
            let key = frames.take(key_len)?;
            match frames.word()? {
                REMOVED => entries.remove(key).map(|_| ()),
                value_len => entries.insert(key, frames.take(value_len as usize)?).map(|_| ()),
            }
            .map_err(io)?;
        }
        Ok(())
    }

    /// Commits the rows written so far with the meta (revision and clock as of the last of
    /// them). Nothing to do when no rows and no meta change came since the last commit: what
    /// was asked for is on disk already.
    fn commit(&mut self) -> Result<(), String> {
        if self.meta_changed {
            self.txn()?;
        }
        let Some(txn) = self.txn.take() else { return Ok(()) };
        if let Some(meta) = self.meta.as_mut() {
            meta.restamp(self.revision, self.clock);
            txn.open_table(META).map_err(io)?.insert("store", meta.to_bytes().as_slice()).map_err(io)?;
        }
        self.meta_changed = false;
        txn.commit().map_err(io)
    }
}

/// Reads a chunk of framed rows.
struct Frames<'a> {
    rows: &'a [u8],
    at: usize,
}

impl<'a> Frames<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let bytes = self.rows.get(self.at..self.at + len).ok_or("a truncated row chunk")?;
        self.at += len;
        Ok(bytes)
    }

    fn word(&mut self) -> Result<u32, String> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

/// Records a commit (or a failure) and tells the listener, if one is set.
fn report(status: &Status_, outcome: Result<u64, String>) {
    let told = match outcome {
        Ok(ticket) => {
            status.committed.store(ticket, Ordering::Release);
            ticket as f64
        }
        Err(reason) => {
            if let Ok(mut failure) = status.failure.lock() {
                failure.get_or_insert_with(|| format!("{:?}: {reason}", status.path));
            }
            -1.0
        }
    };
    if let Ok(listener) = status.listener.lock() {
        if let Some(listener) = listener.as_ref() {
            listener.call(told, ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}
