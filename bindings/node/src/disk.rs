//! The durable store's disk: a redb database beside the in-memory core, and one writer thread
//! that commits changed keys and tells JS when a commit is on disk. The rules (what must be
//! written before a write is acknowledged, in which order, what a reopen reads back, a failed
//! engine) are the core's (`orrery_core::store::persist`); this file is the engine.
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

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use orrery_core::store::persist::{
    recover, Batch, Committer, Journal, PersistError, Persistence, Progress, Row, RowVisitor,
};
use orrery_core::Store;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

/// Keys: namespace name, a 0 byte, the key. Values: the key's records.
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// The store's revision, clock, writers and namespaces under `"store"`.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Called on the JS thread with the highest committed ticket, or -1 after a failed commit.
pub type Listener = ThreadsafeFunction<f64, (), f64, Status, false, false, 0>;

/// A table of rows (byte keys and values) in a redb file.
pub(crate) type RowTable = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// The first bytes of every redb file (its magic number): a file without them was never one.
const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// What to do about a damaged file, said with every refusal that needs a person.
const RESTORE: &str = "restore it from a backup or move it away to start empty";

/// redb's errors, with corruption said in words: its `Corrupted` is a damaged file.
pub(crate) fn db_error(err: impl Into<redb::Error>) -> PersistError {
    match err.into() {
        redb::Error::Corrupted(reason) => PersistError::Damaged(format!("{reason}; {RESTORE}")),
        redb::Error::DatabaseAlreadyOpen => {
            PersistError::Io("the file is open already (in this or another process)".to_owned())
        }
        other => PersistError::Io(other.to_string()),
    }
}

pub(crate) fn io(err: impl std::fmt::Display) -> PersistError {
    PersistError::Io(err.to_string())
}

/// A redb file as the core's persistence engine: rows go into one write transaction, opened
/// with the first change after a commit. The store's file keeps its meta in a second table; the
/// bus's keeps none.
pub(crate) struct Redb {
    db: Database,
    txn: Option<WriteTransaction>,
    rows: RowTable,
    meta: Option<TableDefinition<'static, &'static str, &'static [u8]>>,
}

impl Redb {
    /// Opens the file (`exists`, else creates it), checking every page's checksum (a plain open
    /// trusts a cleanly closed file), and creates the tables so a fresh file reads as empty.
    fn open(
        path: &str,
        exists: bool,
        rows: RowTable,
        meta: Option<TableDefinition<'static, &'static str, &'static [u8]>>,
    ) -> Result<Self, PersistError> {
        let mut builder = Database::builder();
        builder.set_check_integrity_on_open(true);
        let db = if exists { builder.open(path) } else { builder.create(path) }.map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(rows).map_err(db_error)?;
        if let Some(meta) = meta {
            txn.open_table(meta).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)?;
        Ok(Self { db, txn: None, rows, meta })
    }

    fn txn(&mut self) -> Result<&WriteTransaction, PersistError> {
        if self.txn.is_none() {
            self.txn = Some(self.db.begin_write().map_err(db_error)?);
        }
        self.txn.as_ref().ok_or_else(|| io("no write transaction"))
    }
}

impl Persistence for Redb {
    fn read_meta(&mut self) -> Result<Option<Vec<u8>>, PersistError> {
        let Some(meta) = self.meta else { return Ok(None) };
        let read = self.db.begin_read().map_err(db_error)?;
        let table = read.open_table(meta).map_err(db_error)?;
        let meta = table.get("store").map_err(db_error)?;
        Ok(meta.map(|bytes| bytes.value().to_vec()))
    }

    fn read_rows(&mut self, each: &mut RowVisitor<'_>) -> Result<(), PersistError> {
        let read = self.db.begin_read().map_err(db_error)?;
        for row in read.open_table(self.rows).map_err(db_error)?.iter().map_err(db_error)? {
            let (key, value) = row.map_err(db_error)?;
            each(key.value(), value.value())?;
        }
        Ok(())
    }

    fn write_rows(&mut self, rows: &[Row<'_>]) -> Result<(), PersistError> {
        let rows_table = self.rows;
        let mut entries = self.txn()?.open_table(rows_table).map_err(db_error)?;
        for row in rows {
            match row.value {
                Some(value) => entries.insert(row.key, value).map(drop),
                None => entries.remove(row.key).map(drop),
            }
            .map_err(db_error)?;
        }
        Ok(())
    }

    fn put_meta(&mut self, meta: &[u8]) -> Result<(), PersistError> {
        let Some(table) = self.meta else { return Ok(()) };
        self.txn()?.open_table(table).map_err(db_error)?.insert("store", meta).map_err(db_error)?;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), PersistError> {
        match self.txn.take() {
            Some(txn) => txn.commit().map_err(db_error),
            None => Ok(()),
        }
    }
}

/// What a file's first bytes say before redb opens it (redb's `create` would initialise any
/// file as a new database, and what it held would be gone without a word).
pub(crate) enum Header {
    /// No file: one is made.
    Absent,
    /// A file of 0 bytes.
    Empty,
    /// A file of this many bytes without redb's header.
    Foreign(u64),
    /// A redb file.
    Redb,
}

pub(crate) fn read_header(path: &str) -> Result<Header, PersistError> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Header::Absent),
        Err(err) => return Err(io(err)),
    };
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(Header::Empty);
    }
    let mut head = [0u8; MAGIC.len()];
    if file.read_exact(&mut head).is_err() || head != MAGIC {
        return Ok(Header::Foreign(len));
    }
    Ok(Header::Redb)
}

/// Opens `path` with `rows` (and `meta`) and reads it back with `read`. redb may panic on pages
/// damaged outside it, so the open checks every page's checksum, and both the open and the
/// read-back run under `catch_unwind`: a panic there is a damaged file.
pub(crate) fn open_redb<T>(
    path: &str,
    exists: bool,
    rows: RowTable,
    meta: Option<TableDefinition<'static, &'static str, &'static [u8]>>,
    read: impl FnOnce(Redb) -> Result<T, PersistError>,
) -> Result<T, PersistError> {
    let open = std::panic::AssertUnwindSafe(|| read(Redb::open(path, exists, rows, meta)?));
    std::panic::catch_unwind(open).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        Err(PersistError::Damaged(format!("reading it failed: {what}; {RESTORE}")))
    })
}

/// Opens the store file and reads it whole into `store`. An existing file must be a store file
/// (an empty one never is: what it held is lost).
fn open_checked(path: &str, store: &mut Store) -> Result<Committer<Redb>, PersistError> {
    let exists =
        match read_header(path)? {
            Header::Absent => false,
            Header::Redb => true,
            Header::Empty => return Err(PersistError::Damaged(
                "it is empty (0 bytes; a store file never is), so what it held is lost; move it away to start empty"
                    .into(),
            )),
            Header::Foreign(len) => {
                return Err(PersistError::Damaged(format!(
                    "it is not a store file (no store header in its {len} bytes); move it away to start empty"
                )))
            }
        };
    open_redb(path, exists, ENTRIES, Some(META), |mut engine| {
        let meta = recover(&mut engine, store)?;
        Ok(Committer::new(engine, meta))
    })
}

/// Whom the writer thread tells about commits.
pub(crate) type Listening = Arc<Mutex<Option<Listener>>>;

/// The open database's writer thread, and the journal that feeds it.
pub struct Disk {
    sender: Option<Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
    journal: Journal,
    listener: Listening,
}

pub(crate) fn send(sender: Option<&Sender<Batch>>, batch: Batch) -> Result<(), PersistError> {
    let sender = sender.ok_or(PersistError::Closed)?;
    sender.send(batch).map_err(|_| PersistError::Stopped)
}

/// Starts a file's writer thread: it commits what `committer` is sent (`batched`: every request
/// queued while a commit syncs in the next one), and after each commit or failure records it in
/// `progress`, calls `after_commit`, then tells the listener, if one is set. A panic in the writer
/// must not leave writes waiting forever: it fails the disk.
pub(crate) fn spawn_writer(
    name: &str,
    mut committer: Committer<Redb>,
    batched: bool,
    progress: &Arc<Progress>,
    listener: &Listening,
    after_commit: impl Fn() + Send + 'static,
) -> Result<(Sender<Batch>, JoinHandle<()>), PersistError> {
    let (sender, receiver) = channel();
    let (progress, listener) = (Arc::clone(progress), Arc::clone(listener));
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let tell = |outcome| {
                let told = progress.record(outcome);
                after_commit();
                if let Ok(listener) = listener.lock() {
                    if let Some(listener) = listener.as_ref() {
                        listener.call(told, ThreadsafeFunctionCallMode::NonBlocking);
                    }
                }
            };
            let run = std::panic::AssertUnwindSafe(|| {
                committer.run(batched, || receiver.recv().ok(), || receiver.try_recv().ok(), &tell);
            });
            if std::panic::catch_unwind(run).is_err() {
                tell(Err(PersistError::Panicked));
            }
        })
        .map_err(io)?;
    Ok((sender, thread))
}

impl Disk {
    /// Opens (or creates) the database at `path` and reads everything in it into `store`
    /// (fresh). A file that exists but is not an intact store (empty, truncated, overwritten,
    /// pages that fail their checksums, rows that do not check out) is refused as damaged,
    /// never opened as an empty store: only a path where no file exists creates a new one.
    pub fn open(path: &str, batched: bool, store: &mut Store) -> Result<Self, PersistError> {
        let committer = open_checked(path, store)?;
        let progress = Arc::new(Progress::new(path));
        let listener: Listening = Arc::default();
        let (sender, thread) = spawn_writer("orrery-store-disk", committer, batched, &progress, &listener, || {})?;
        Ok(Self { sender: Some(sender), thread: Some(thread), journal: Journal::new(progress, !batched), listener })
    }

    /// The failure that stopped the disk, if any.
    pub fn check(&self) -> Result<(), PersistError> {
        self.journal.check()
    }

    /// Hands the writer what the call just made changed in `store` (see `Journal::record`).
    pub fn record(&mut self, store: &mut Store) -> Result<(), PersistError> {
        let sender = self.sender.as_ref();
        self.journal.record(store, |batch| send(sender, batch))
    }

    /// Asks the writer to commit everything so far (a no-op when nothing changed). Fails once a
    /// commit has failed.
    pub fn submit(&mut self) -> Result<(), PersistError> {
        let sender = self.sender.as_ref();
        self.journal.submit(|batch| send(sender, batch))
    }

    /// The ticket that acknowledges every change so far.
    #[must_use]
    pub fn submitted(&self) -> u64 {
        self.journal.submitted()
    }

    /// The ticket of the last batch on disk.
    #[must_use]
    pub fn committed(&self) -> u64 {
        self.journal.committed()
    }

    /// Sets (or clears) the function told about commits; while set it keeps Node running.
    pub fn set_listener(&self, listener: Option<Listener>) {
        if let Ok(mut slot) = self.listener.lock() {
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
