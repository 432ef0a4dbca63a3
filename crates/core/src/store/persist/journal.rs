//! The writing side of durability: after each call that may change the store, what its engine
//! must be handed, in order, and the ticket that will acknowledge it.

use std::collections::HashSet;
use std::sync::Arc;

use super::{row_key, Batch, PersistError, Progress, Stamp, REMOVED};
use crate::store::{Bytes, Store};

/// Rows staged before they go to the engine's writer: a chunk per wake-up of its thread, not a
/// row.
const CHUNK_ROWS: usize = 128;

/// Turns a store's changes into [`Batch`]es for its engine, and counts commit tickets.
#[derive(Debug)]
pub struct Journal {
    progress: Arc<Progress>,
    /// Every call's changes commit on their own (`every`), rather than with their turn's.
    each: bool,
    staged: Vec<u8>,
    staged_rows: usize,
    /// The store's revision and clock after the last staged change.
    stamp: Stamp,
    /// What the engine last got of the store's meta (see [`Store::meta_changed`]).
    meta_seen: Vec<u64>,
    /// Changes handed over (or staged) since the last commit request.
    uncommitted: bool,
    /// The last ticket requested.
    submitted: u64,
    /// Keys already staged by this call (reused between calls).
    seen: HashSet<(u32, Bytes)>,
}

impl Journal {
    /// A journal reporting through `progress`; `each` commits every call's changes on their own.
    #[must_use]
    pub fn new(progress: Arc<Progress>, each: bool) -> Self {
        Self {
            progress,
            each,
            staged: Vec::new(),
            staged_rows: 0,
            stamp: Stamp::default(),
            meta_seen: Vec::new(),
            uncommitted: false,
            submitted: 0,
            seen: HashSet::new(),
        }
    }

    /// Where commits stand.
    #[must_use]
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Refuses every call once the engine failed: called before a call may change the store,
    /// so a change that could never reach the disk is never made.
    ///
    /// # Errors
    /// The engine's first failure, naming the file.
    pub fn check(&self) -> Result<(), PersistError> {
        self.progress.check()
    }

    /// Hands `send` what the engine needs of the changes of the call just made: the new meta
    /// first when it changed, then the changed keys' rows (staged, and sent a chunk at a time,
    /// always between calls so a transaction's rows travel together), then a commit request
    /// when every call commits on its own.
    ///
    /// # Errors
    /// The engine's failure, or `send`'s.
    pub fn record(
        &mut self,
        store: &mut Store,
        mut send: impl FnMut(Batch) -> Result<(), PersistError>,
    ) -> Result<(), PersistError> {
        self.check()?;
        // Meta first: no commit may hold a row (a new writer's, a new namespace's) without the
        // meta that explains it. Rows staged before the change go ahead of it.
        if store.meta_changed(&mut self.meta_seen) {
            self.uncommitted = true;
            if !self.staged.is_empty() {
                self.send_staged(&mut send)?;
            }
            send(Batch::Meta(store.meta()))?;
        }
        let dirty = store.take_dirty();
        if dirty.is_empty() {
            return Ok(());
        }
        self.uncommitted = true;
        self.stamp.advance(store.revision(), store.clock());
        let single = dirty.len() == 1;
        self.seen.clear();
        for (ns, key) in dirty {
            // A key changed twice in one call has one row: its state after the call.
            if !single && !self.seen.insert((ns, key.clone())) {
                continue;
            }
            let name = store.namespace_name(ns).unwrap_or_default();
            self.stage(name, &key, |out| store.encode_entry(ns, &key, out));
        }
        if self.staged_rows >= CHUNK_ROWS {
            self.send_staged(&mut send)?;
        }
        if self.each {
            self.submit(send)?;
        }
        Ok(())
    }

    fn stage(&mut self, namespace: &str, key: &[u8], encode: impl FnOnce(&mut Vec<u8>) -> bool) {
        let key_len = namespace.len() + 1 + key.len();
        self.staged.extend_from_slice(&(key_len as u32).to_le_bytes());
        row_key(&mut self.staged, namespace, key);
        let length_at = self.staged.len();
        self.staged.extend_from_slice(&REMOVED.to_le_bytes());
        if encode(&mut self.staged) {
            let value = (self.staged.len() - length_at - 4) as u32;
            self.staged[length_at..length_at + 4].copy_from_slice(&value.to_le_bytes());
        }
        self.staged_rows += 1;
    }

    fn send_staged(&mut self, send: &mut impl FnMut(Batch) -> Result<(), PersistError>) -> Result<(), PersistError> {
        self.staged_rows = 0;
        let rows = std::mem::take(&mut self.staged);
        send(Batch::Rows { rows, revision: self.stamp.revision, clock: self.stamp.clock })
    }

    /// Asks for a commit of everything so far, under the next ticket (nothing when nothing
    /// changed).
    ///
    /// # Errors
    /// The engine's failure, or `send`'s.
    pub fn submit(&mut self, mut send: impl FnMut(Batch) -> Result<(), PersistError>) -> Result<(), PersistError> {
        self.check()?;
        if !self.uncommitted {
            return Ok(());
        }
        if !self.staged.is_empty() {
            self.send_staged(&mut send)?;
        }
        self.submitted += 1;
        self.uncommitted = false;
        send(Batch::Commit { ticket: self.submitted })
    }

    /// The ticket that acknowledges every change so far: the last commit requested, or the
    /// next one if changes came after it.
    #[must_use]
    pub fn submitted(&self) -> u64 {
        self.submitted + u64::from(self.uncommitted)
    }

    /// The ticket of the last commit that returned.
    #[must_use]
    pub fn committed(&self) -> u64 {
        self.progress.committed()
    }
}
